"""The `scarmon` command line."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

import click

from scarmon import defaults


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


STORE_HELP = ("Where sequences are stored: a local folder (default ./scarmon-store) or s3://bucket/prefix "
              "(endpoint from --s3-endpoint, $SCARMON_S3_ENDPOINT_URL or $AWS_ENDPOINT_URL).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """scarmon: watch landslide scars in Sentinel-2 imagery and warn when they grow.

    Typical use: `scarmon ingest --site sites/baige.yaml` on a schedule; `scarmon demo` runs the whole
    pipeline offline on a synthetic catalog.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@click.option("--catalog", default=None,
              help=f"STAC API URL, or path/URL of a static STAC ItemCollection/Catalog JSON. Default: {defaults.CATALOG}")
@click.option("--collection", default=None, help="Collection id (default: sentinel-2-l2a; sentinel-2-c1-l2a on Earth Search).")
@click.option("--store", default="scarmon-store", show_default=True, help=STORE_HELP)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL (MinIO, Ceph, moto...).")
@click.option("--start", callback=_date, help="First acquisition date to search (default: from the stored cursor, or the site's start).")
@click.option("--end", callback=_date, help="Last acquisition date to search (default: now).")
def ingest(site_file: str, catalog: str | None, collection: str | None, store: str, s3_endpoint: str | None,
           start: dt.date | None, end: dt.date | None) -> None:
    """Append new cloud-free Sentinel-2 L2A scenes of a site to its stored NDVI frame sequence."""
    from scarmon.discovery import open_catalog
    from scarmon.site import load_site
    from scarmon.store import open_store

    site = _or_exit(load_site, site_file)
    report = _run_ingest(site, open_catalog(catalog, collection=collection), _or_exit(open_store, store, endpoint_url=s3_endpoint),
                         start, end)
    click.echo(report.summary())


def _run_ingest(site, catalog, store, start, end):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    from scarmon.discovery import CatalogError
    from scarmon.ingest import ingest as run
    from scarmon.sequence import SequenceError
    from scarmon.store import StoreError

    bar = tqdm(total=0, unit="scene", desc=f"ingest {site.id}", file=sys.stderr, disable=None)
    try:
        return run(site, catalog, store, start=start, end=end, progress=bar.update,
                   on_scenes=lambda n: setattr(bar, "total", n) or bar.refresh())
    except (CatalogError, SequenceError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()


def _or_exit(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run a loader; turn the errors meant for users into a clean CLI error."""
    from scarmon.site import SiteError
    from scarmon.store import StoreError

    try:
        return fn(*args, **kwargs)
    except (SiteError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None


def _run_track(site, store):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    from scarmon.sequence import SequenceError
    from scarmon.store import StoreError
    from scarmon.track import track_site

    bar = tqdm(total=0, unit="frame", desc=f"track {site.id}", file=sys.stderr, disable=None)
    try:
        return track_site(site, store, progress=bar.update, on_frames=lambda n: setattr(bar, "total", n) or bar.refresh())
    except (SequenceError, StoreError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@click.option("--store", default="scarmon-store", show_default=True, help=STORE_HELP)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL.")
def track(site_file: str, store: str, s3_endpoint: str | None) -> None:
    """Track the scar through the frames appended since the last run (masks, tracking state, area series)."""
    from scarmon.site import load_site
    from scarmon.store import open_store

    site = _or_exit(load_site, site_file)
    click.echo(_run_track(site, _or_exit(open_store, store, endpoint_url=s3_endpoint)).summary())


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@click.option("--catalog", default=None, help="STAC API URL or static JSON (see `ingest --help`).")
@click.option("--collection", default=None, help="Collection id.")
@click.option("--store", default="scarmon-store", show_default=True, help=STORE_HELP)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL.")
@click.option("--start", callback=_date, help="First acquisition date to search.")
@click.option("--end", callback=_date, help="Last acquisition date to search.")
def run(site_file: str, catalog: str | None, collection: str | None, store: str, s3_endpoint: str | None,
        start: dt.date | None, end: dt.date | None) -> None:
    """Ingest new scenes, then track them: one monitoring tick for a site."""
    from scarmon.discovery import open_catalog
    from scarmon.site import load_site
    from scarmon.store import open_store

    site = _or_exit(load_site, site_file)
    st = _or_exit(open_store, store, endpoint_url=s3_endpoint)
    click.echo(_run_ingest(site, open_catalog(catalog, collection=collection), st, start, end).summary())
    click.echo(_run_track(site, st).summary())


@main.command()
@click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the synthetic catalog, the demo site file and the store.")
@click.option("--scenario", default="creep-failure", show_default=True, help="Synthetic scenario.")
@click.option("--start", default="2021-06-01", show_default=True)
@click.option("--end", default="2023-06-01", show_default=True)
def demo(out: str, scenario: str, start: str, end: str) -> None:
    """Offline demo: generate a synthetic Sentinel-2 L2A catalog for a demo site, ingest it, track the scar."""
    from scarmon.demo import run_demo

    run_demo(Path(out), scenario=scenario, start=start, end=end, echo=click.echo, ingest=_run_ingest, track=_run_track)


@main.command("site-schema")
def site_schema_cmd() -> None:
    """Print the JSON Schema of site files."""
    import json

    from scarmon.site import site_schema

    click.echo(json.dumps(site_schema(), indent=2))


@main.command("check-site")
@click.argument("site_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check_site(site_files: tuple[str, ...]) -> None:
    """Validate site files; print one line per file."""
    from scarmon.grid import site_grid
    from scarmon.site import SiteError, load_site

    bad = 0
    for path in site_files:
        try:
            site = load_site(path)
        except SiteError as exc:
            bad += 1
            click.echo(str(exc), err=True)
            continue
        g = site_grid(site.polygon, site.resolution_m)
        click.echo(f"{path}: ok: {site.id} ({site.display_name}), grid EPSG:{g.epsg} {g.width}x{g.height} at {g.resolution} m")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
