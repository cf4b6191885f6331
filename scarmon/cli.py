"""The `scarmon` command line."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from scarmon import __version__, defaults


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


STORE_HELP = (
    "Where sequences are stored: a local folder (default ./scarmon-store) or s3://bucket/prefix "
    "(endpoint from --s3-endpoint, $SCARMON_S3_ENDPOINT_URL or $AWS_ENDPOINT_URL)."
)


_F = TypeVar("_F", bound=Callable[..., Any])


def _store_options(f: _F) -> _F:
    """--store and --s3-endpoint, as every command that opens a store takes them ($SCARMON_STORE...)."""
    f = click.option(
        "--s3-endpoint", envvar="SCARMON_S3_ENDPOINT_URL", default=None, help="S3-compatible endpoint URL."
    )(f)
    return click.option("--store", envvar="SCARMON_STORE", default="scarmon-store", show_default=True, help=STORE_HELP)(
        f
    )


def _catalog_options(f: _F) -> _F:
    """--catalog and --collection of the commands that search a catalog besides `ingest` ($SCARMON_CATALOG...)."""
    f = click.option("--collection", envvar="SCARMON_COLLECTION", default=None, help="Collection id.")(f)
    return click.option(
        "--catalog", envvar="SCARMON_CATALOG", default=None, help="STAC API URL or static JSON (see `ingest --help`)."
    )(f)


EXIT_BUSY = 75
"""Exit status when the site is busy (EX_TEMPFAIL: another run holds its lock; try again later)."""


class _Main(click.Group):
    """Errors meant for people (ScarmonError: bad site file, store, catalog, busy site...) end as one line on
    stderr and a non-zero exit status, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from scarmon.errors import ScarmonError
        from scarmon.store.lock import SiteBusy

        try:
            return super().invoke(ctx)
        except SiteBusy as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_BUSY)
        except ScarmonError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="scarmon")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """scarmon: watch landslide scars in Sentinel-2 imagery and warn when they grow.

    Typical use: `scarmon ingest --site sites/baige.yaml` on a schedule; `scarmon demo` runs the whole
    pipeline offline on a synthetic catalog.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # urllib3 logs every retry of a failed request; the retries are bounded and the final error names the URL and
    # the cause in one line, so they are shown with --verbose only.
    logging.getLogger("urllib3").setLevel(logging.INFO if verbose else logging.ERROR)


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@click.option(
    "--catalog",
    envvar="SCARMON_CATALOG",
    default=None,
    help=f"STAC API URL, or path/URL of a static STAC ItemCollection/Catalog JSON. Default: {defaults.CATALOG}",
)
@click.option(
    "--collection",
    envvar="SCARMON_COLLECTION",
    default=None,
    help="Collection id (default: sentinel-2-l2a; sentinel-2-c1-l2a on Earth Search).",
)
@click.option("--store", envvar="SCARMON_STORE", default="scarmon-store", show_default=True, help=STORE_HELP)
@click.option(
    "--s3-endpoint",
    envvar="SCARMON_S3_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint URL (MinIO, Ceph, moto...).",
)
@click.option(
    "--start",
    callback=_date,
    help="First acquisition date to search (default: from the stored cursor, or the site's start).",
)
@click.option("--end", callback=_date, help="Last acquisition date to search (default: now).")
def ingest(
    site_file: str,
    catalog: str | None,
    collection: str | None,
    store: str,
    s3_endpoint: str | None,
    start: dt.date | None,
    end: dt.date | None,
) -> None:
    """Append new cloud-free Sentinel-2 L2A scenes of a site to its stored NDVI frame sequence."""
    _stages(site_file, store, s3_endpoint, ("ingest",), catalog=catalog, collection=collection, start=start, end=end)


def _stages(
    site_file: str,
    store: str,
    s3_endpoint: str | None,
    stages: tuple[str, ...],
    *,
    catalog: str | None = None,
    collection: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    checkpoint: str | None = None,
    from_start: bool = False,
) -> None:
    """Run stages of the one stage runner for a site (under its lock), with progress bars; print each summary."""
    from tqdm import tqdm

    from scarmon.ingest.discovery import open_catalog
    from scarmon.service.runner import TickOptions, run_stages
    from scarmon.site import load_site
    from scarmon.store.backends import open_store

    site = load_site(site_file)
    st = open_store(store, endpoint_url=s3_endpoint)
    tracker = _tracker(site, checkpoint) if "track" in stages else None
    bars = {
        name: tqdm(total=0, unit=unit, desc=f"{name} {site.id}", file=sys.stderr, disable=None)
        for name, unit in (("ingest", "scene"), ("track", "frame"))
        if name in stages
    }

    def total(name: str) -> Callable[[int], object]:
        def set_total(n: int) -> None:
            bars[name].total = n
            bars[name].refresh()

        return set_total

    opts = TickOptions(
        start=start,
        end=end,
        tracker=tracker,
        from_start=from_start,
        ingest_progress=bars["ingest"].update if "ingest" in bars else None,
        ingest_total=total("ingest") if "ingest" in bars else None,
        track_progress=bars["track"].update if "track" in bars else None,
        track_total=total("track") if "track" in bars else None,
    )
    try:
        report = run_stages(
            site, st, open_catalog(catalog, collection=collection) if "ingest" in stages else None, stages, opts=opts
        )
    finally:
        for bar in bars.values():
            bar.close()
    for line in report.lines:
        click.echo(line)


def _tracker(site: Any, checkpoint: str | None) -> Any:
    from scarmon.tracking.trackers import make_tracker

    return make_tracker(site.ndvi_threshold, checkpoint=checkpoint)


SAM2_HELP = (
    "SAM 2 checkpoint file (e.g. sam2.1_hiera_tiny.pt); default $SCARMON_SAM2_CHECKPOINT. Without one the "
    "weight-free knowledge tracker is used. Also: $SCARMON_SAM2_CONFIG, $SCARMON_SAM2_DEVICE, "
    "$SCARMON_SAM2_IMAGE_SIZE."
)


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_store_options
@click.option("--sam2-checkpoint", default=None, type=click.Path(dir_okay=False), help=SAM2_HELP)
@click.option("--from-start", is_flag=True, help="Re-track every frame (e.g. after changing the site's prompts).")
def track(site_file: str, store: str, s3_endpoint: str | None, sam2_checkpoint: str | None, from_start: bool) -> None:
    """Track the scar through the frames appended since the last run (masks, tracking state, area series)."""
    _stages(site_file, store, s3_endpoint, ("track",), checkpoint=sam2_checkpoint, from_start=from_start)


def _point(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[float, float, int]]:
    out = []
    for v in values:
        try:
            lon, lat, label = v.split(",")
            out.append((float(lon), float(lat), int(label)))
        except ValueError:
            raise click.BadParameter(f"{v!r}: use LON,LAT,1 (scar) or LON,LAT,0 (not scar)") from None
    return out


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_store_options
@click.option("--date", callback=_date, help="Acquisition date of the frame the points are on.")
@click.option(
    "--point", "points", multiple=True, callback=_point, help="LON,LAT,LABEL (1 scar, 0 not scar); repeatable."
)
@click.option("--undo", "undo_id", default=None, help="Remove the correction with this id.")
@click.option("--list", "list_only", is_flag=True, help="List the site's prompts and corrections.")
@click.option("--no-track", is_flag=True, help="Only store the change; the next `track` re-propagates.")
@click.option("--sam2-checkpoint", default=None, type=click.Path(dir_okay=False), help=SAM2_HELP)
def refine(
    site_file: str,
    store: str,
    s3_endpoint: str | None,
    date: dt.date | None,
    points: list[tuple[float, float, int]],
    undo_id: str | None,
    list_only: bool,
    no_track: bool,
    sam2_checkpoint: str | None,
) -> None:
    """Interactive refinement: add correction points on a frame (or undo one), re-propagate from that frame, rebuild
    the alert history from the corrected series (nothing is re-sent) and update published products."""
    from scarmon.service import runner
    from scarmon.site import load_site
    from scarmon.store.backends import open_store
    from scarmon.tracking.corrections import list_corrections

    site = load_site(site_file)
    st = open_store(store, endpoint_url=s3_endpoint)
    if list_only:
        runner.require_sequence(st, site.id)
        for p in site.prompts:
            click.echo(f"site file  {p.date}  lon={p.lon} lat={p.lat} label={p.label}")
        for c in list_corrections(st, site.id):
            click.echo(f"correction {c['date']}  lon={c['lon']} lat={c['lat']} label={c['label']}  id={c['id']}")
        return
    if not (undo_id or (date and points)):
        raise click.UsageError("give --date with one or more --point, or --undo ID, or --list")
    opts = runner.TickOptions(tracker=None if no_track else _tracker(site, sam2_checkpoint))
    report = runner.refine(site, st, date=date, points=points, undo=undo_id, retrack=not no_track, opts=opts)
    click.echo(report.summary())


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@click.option(
    "--truth",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Folder of truth masks: GeoTIFFs with YYYY-MM-DD in their names, any grid (reprojected).",
)
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(site_file: str, truth: str, store: str, s3_endpoint: str | None, as_json: bool) -> None:
    """Compare stored masks with truth masks: per-frame IoU, precision, recall (paper Eqs. 2-4) and their means."""
    import json

    from scarmon.service.runner import require_sequence
    from scarmon.site import load_site
    from scarmon.store.backends import open_store
    from scarmon.tracking.evaluate import evaluate_site

    site = load_site(site_file)
    st = open_store(store, endpoint_url=s3_endpoint)
    require_sequence(st, site.id)
    try:
        result = evaluate_site(site, st, Path(truth))
    except (ValueError, OSError) as exc:  # a truth file that cannot be read or matched: named in the message
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{'date':10s} {'IoU':>6s} {'prec':>6s} {'recall':>6s}")
    for r in result["frames"]:
        click.echo(f"{r['date']:10s} {r['iou']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f}")
    m = result["mean"]
    click.echo(
        f"{'mean':10s} {m['iou']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f}  ({len(result['frames'])} frames)"
    )


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_catalog_options
@_store_options
@click.option("--start", callback=_date, help="First acquisition date to search.")
@click.option("--end", callback=_date, help="Last acquisition date to search.")
def run(
    site_file: str,
    catalog: str | None,
    collection: str | None,
    store: str,
    s3_endpoint: str | None,
    start: dt.date | None,
    end: dt.date | None,
) -> None:
    """Ingest new scenes, then track them (no alerts, no products: `scarmon monitor` runs the whole tick)."""
    _stages(
        site_file, store, s3_endpoint, ("ingest", "track"), catalog=catalog, collection=collection, start=start, end=end
    )


@main.command()
@click.option(
    "--out",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the synthetic catalog, the demo site file and the store.",
)
@click.option("--scenario", default="creep-failure", show_default=True, help="Synthetic scenario.")
@click.option("--start", default="2021-06-01", show_default=True)
@click.option("--end", default="2023-06-01", show_default=True)
@click.option("--quick", is_flag=True, help="Only ingest and track the whole history at once (no Prefect, no alerts).")
@click.option("--every", default=30, show_default=True, help="Days between the replayed monitoring ticks.")
def demo(out: str, scenario: str, start: str, end: str, quick: bool = False, every: int = 30) -> None:
    """Offline demo: a synthetic Sentinel-2 L2A catalog for a demo site, replayed as scheduled monitoring ticks
    (ingest, track, alert by e-mail to a local SMTP sink, publish products and the dashboard)."""
    if not quick:
        from scarmon.demo.ticks import run_tick_demo

        return run_tick_demo(Path(out), scenario=scenario, start=start, end=end, every_days=every, echo=click.echo)
    from scarmon.demo.quick import run_demo

    run_demo(Path(out), scenario=scenario, start=start, end=end, echo=click.echo)


@main.command("site-schema")
def site_schema_cmd() -> None:
    """Print the JSON Schema of site files."""
    import json

    from scarmon.site import site_schema

    click.echo(json.dumps(site_schema(), indent=2))


@main.command("check-site")
@click.argument("site_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check_site(site_files: tuple[str, ...]) -> None:
    """Validate site files; print one line per file, then where the AOI is (its centre and a map link: look at it)
    and warnings: an AOI outside Sentinel-2's coverage or that looks lat/lon-swapped, prompts at the AOI's edge."""
    from scarmon.alerts.notify import fmt_lonlat, map_link
    from scarmon.grid import site_grid
    from scarmon.site import SiteError, load_site

    bad = 0
    for path in site_files:
        try:
            site = load_site(path)
        except SiteError as exc:
            bad += 1
            click.echo(str(exc), err=True)
            hint = _swapped_prompts_hint(path)
            if hint:
                click.echo(f"{path}: hint: {hint}", err=True)
            continue
        g = site_grid(site.polygon, site.resolution_m)
        click.echo(
            f"{path}: ok: {site.id} ({site.display_name}), grid EPSG:{g.epsg} {g.width}x{g.height} at {g.resolution} m"
        )
        c = site.polygon.centroid
        click.echo(f"  where: {fmt_lonlat(c.x, c.y)} (AOI centre); map: {map_link(c.x, c.y, zoom=14)}")
        for level, text in _site_warnings(site, g):
            click.echo(f"  {level}: {text}")
    sys.exit(1 if bad else 0)


S2_LAT_RANGE = (-56.0, 84.0)
"""Sentinel-2 acquires land between about 56° S and 84° N."""


def _site_warnings(site: Any, grid: Any) -> list[tuple[str, str]]:
    """What in a valid site file is probably not what its author meant: ("warning" | "note", text)."""
    from shapely.geometry import Point

    out: list[tuple[str, str]] = []
    c = site.polygon.centroid
    lo, hi = S2_LAT_RANGE
    if not lo <= c.y <= hi:
        swapped = (
            f"; with lon and lat swapped it would be at {abs(c.x):.4f}° {'N' if c.x >= 0 else 'S'}, "
            f"{abs(c.y):.4f}° {'E' if c.y >= 0 else 'W'}"
            if lo <= c.x <= hi
            else ""
        )
        out.append(
            (
                "warning",
                f"the AOI lies at latitude {c.y:.4f}, outside Sentinel-2's coverage ({-lo:.0f}° S to {hi:.0f}° N): "
                f"no image will ever be found. GeoJSON wants [lon, lat] pairs; check their order{swapped}",
            )
        )
    elif abs(c.x) <= 90 and lo <= c.x <= hi:
        out.append(
            (
                "note",
                "lon and lat would also be valid swapped: check on the map link above that the AOI is on "
                "the slope (GeoJSON and the prompts want lon first, then lat)",
            )
        )
    ring = grid.project(site.polygon).exterior
    for i, p in enumerate(site.prompts):
        x, y = grid.project(Point(p.lon, p.lat)).coords[0]
        d = ring.distance(Point(x, y))
        if d < 5 * grid.resolution:
            out.append(
                (
                    "warning",
                    f"prompts[{i}] lies {d:.0f} m from the AOI's edge: a scar there may reach "
                    "beyond the AOI; draw the AOI wider",
                )
            )
    return out


def _swapped_prompts_hint(path: str) -> str | None:
    """For a site file whose prompts fall outside its AOI: say so when swapping their lon and lat puts them inside."""
    import yaml
    from shapely.geometry import Point, shape

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        poly = shape(doc["aoi"])
        prompts = list(doc.get("prompts") or [])
        outside = [i for i, p in enumerate(prompts) if not poly.contains(Point(float(p["lon"]), float(p["lat"])))]
        if outside and all(poly.contains(Point(float(prompts[i]["lat"]), float(prompts[i]["lon"]))) for i in outside):
            return (
                f"prompts {outside} lie inside the AOI with lon and lat swapped: write them as "
                "{lon: <degrees east>, lat: <degrees north>}"
            )
        ring = [list(map(float, pt)) for pt in doc["aoi"]["coordinates"][0]]
        swapped = shape({"type": "Polygon", "coordinates": [[[b, a] for a, b in ring]]})
        if outside and all(
            swapped.contains(Point(float(prompts[i]["lon"]), float(prompts[i]["lat"]))) for i in outside
        ):
            return (
                "the prompts lie inside the AOI with the AOI's lon and lat swapped: GeoJSON coordinates are "
                "[lon, lat] pairs"
            )
    except Exception:  # noqa: BLE001 - a hint only: a file that cannot be read this way already has its error
        return None
    return None


# --- Monitoring service (issue 4): Prefect flows, alerts -------------------------------------------------------------


def _prefect_env() -> None:
    import os

    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@main.command()
@click.option("--site", "site_file", default=None, type=click.Path(dir_okay=False), help="One site file (YAML).")
@click.option(
    "--sites",
    "sites_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Every site file in this folder, in parallel (monitor_all).",
)
@_catalog_options
@_store_options
@click.option("--end", callback=_date, help="Search scenes up to this date (replaying history); default: now.")
@click.option(
    "--dask",
    "dask_workers",
    type=int,
    default=None,
    help="With --sites: run the site ticks on a local Dask cluster of this many worker processes.",
)
@click.option("--dask-address", default=None, help="With --sites: run on this Dask scheduler (tcp://host:8786).")
@click.option("--no-notify", is_flag=True, help="Record alerts but send nothing (they stay in the outbox).")
def monitor(
    site_file: str | None,
    sites_dir: str | None,
    catalog: str | None,
    collection: str | None,
    store: str,
    s3_endpoint: str | None,
    end: dt.date | None,
    dask_workers: int | None,
    dask_address: str | None,
    no_notify: bool,
) -> None:
    """One monitoring tick now (ingest, track, alert, notify, publish), through Prefect in ephemeral mode (no
    server). Exit status: 0 done, 1 failed (the message says why), 75 the site is busy (another run holds it)."""
    import json

    from scarmon.site import load_site

    _prefect_env()
    if bool(site_file) == bool(sites_dir):
        raise click.UsageError("give --site FILE or --sites FOLDER")
    if site_file:
        from scarmon.service.flows import monitor_site

        load_site(site_file)  # bad input: the same one line as `scarmon run`, before Prefect starts
        state = monitor_site(
            site_file,
            store=store,
            catalog=catalog,
            collection=collection,
            s3_endpoint=s3_endpoint,
            end=end,
            notify=not no_notify,
            return_state=True,
        )
        if not state.is_completed():
            raise click.ClickException(state.message or "the monitoring tick failed")
        from scarmon.service.flows import state_result

        report = cast(dict[str, Any], state_result(state))
        click.echo(json.dumps(report, indent=1, default=str))
        if report.get("status") == "busy":
            sys.exit(EXIT_BUSY)
        return
    kwargs: dict[str, Any] = dict(
        sites_dir=sites_dir,
        store=store,
        catalog=catalog,
        collection=collection,
        s3_endpoint=s3_endpoint,
        end=end,
        notify=not no_notify,
        return_state=True,
    )
    if dask_workers or dask_address:
        from scarmon.service.dask import monitor_all_on_dask

        state = monitor_all_on_dask(address=dask_address, n_workers=dask_workers, **kwargs)
    else:
        from scarmon.service.flows import monitor_all

        state = monitor_all(**kwargs)
    from scarmon.service.flows import SitesFailed, state_result

    summary = state_result(state, raise_on_failure=False)
    if isinstance(summary, SitesFailed):
        summary = summary.summary
    if not isinstance(summary, dict) or "results" not in summary:  # failed before any site ran (no such folder)
        raise click.ClickException(state.message or "monitoring failed")
    for name, r in summary["results"].items():
        click.echo(
            f"{name}: {r['status']}, {r['appended']} appended, {len(r['events'])} alert event(s), "
            f"{len(r['sent'])} sent, {r['outbox']} in the outbox, state {r['alert_state']}/{r['alert_level']}"
        )
    for name, why in summary["failed"].items():
        click.echo(f"{name}: failed: {why}", err=True)
    if summary["failed"]:
        sys.exit(1)
    busy = [name for name, r in summary["results"].items() if r.get("status") == "busy"]
    if busy:  # skipped because another run held them: not a silent success
        click.echo(f"busy (another run holds them; try again later): {', '.join(busy)}", err=True)
        sys.exit(EXIT_BUSY)


@main.command()
@click.option(
    "--sites",
    "sites_dir",
    default="sites",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of site files: one scheduled deployment each (cron from the site's `schedule`).",
)
@_catalog_options
@_store_options
def serve(sites_dir: str, catalog: str | None, collection: str | None, store: str, s3_endpoint: str | None) -> None:
    """Unattended operation on one machine: serve one monitor_site deployment per site on its schedule
    (Prefect `serve`; needs a Prefect server: `prefect server start`, then PREFECT_API_URL). Ctrl-C stops."""
    _prefect_env()
    from prefect import serve as prefect_serve

    from scarmon.service.flows import site_deployments

    deployments = site_deployments(
        sites_dir,
        store=str(Path(store).resolve()) if "://" not in store else store,
        catalog=catalog,
        collection=collection,
        s3_endpoint=s3_endpoint,
    )
    if not deployments:
        raise click.ClickException(f"no site files in {sites_dir}")
    for d in deployments:
        click.echo(
            f"deployment monitor-site/{d.name}: {d.schedules[0].schedule.cron if d.schedules else 'no schedule'}"
        )
    prefect_serve(*deployments)


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_store_options
@click.option("--send", is_flag=True, help="Try to deliver what waits in the outbox now.")
def alerts(site_file: str, store: str, s3_endpoint: str | None, send: bool) -> None:
    """Show a site's alert history, its alert state and what waits in its outbox."""
    from scarmon.alerts.history import load_state, outbox, read_history
    from scarmon.service.runner import require_sequence, site_session
    from scarmon.site import load_site
    from scarmon.store.backends import open_store

    site = load_site(site_file)
    st = open_store(store, endpoint_url=s3_endpoint)
    require_sequence(st, site.id)
    for r in read_history(st, site.id):
        note = f" [{r['note']}]" if r.get("note") else ""
        click.echo(
            f"{r['date']}  {r['event']:11s} {r['level']:7s} area {r['area_m2']:>10,.0f} m²  baseline "
            f"{(r['baseline_m2'] or 0):>10,.0f} m² ({r['baseline_kind']})  {r['reason']}{note}"
        )
    state = load_state(st, site.id)
    click.echo(
        f"state: {state.status} ({('none', 'watch', 'warning', 'alarm')[state.level]}), "
        f"{state.observations} observations, last {state.last[0] if state.last else '-'}"
    )
    if send:
        from scarmon.service.runner import notify_stage

        with site_session(st, site.id):  # delivering changes the outbox: not while a tick does
            click.echo(notify_stage(site, st).summary())
    for e in outbox(st, site.id):
        chans = ", ".join(
            f"{c}: {v['status']} ({v.get('attempts', 0)} attempt(s)) {v.get('last_error', '')}"
            for c, v in e.channels.items()
        )
        click.echo(f"outbox: {e.event.id}  {chans}")


# --- products, dashboard, refinement in the browser (issue 5) --------------------------------------------------
@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_store_options
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Validate the site's STAC catalog offline after publishing.",
)
def publish(site_file: str, store: str, s3_endpoint: str | None, validate: bool) -> None:
    """Write the site's products (polygons, quicklooks, plots, STAC catalog, dashboard) into the store."""
    from scarmon.products.publish import s3_public_read_policy
    from scarmon.products.stac import validate_store
    from scarmon.service.runner import run_stages
    from scarmon.site import load_site
    from scarmon.store.backends import open_store

    site = load_site(site_file)
    st = open_store(store, endpoint_url=s3_endpoint)
    report = run_stages(site, st, None, ("publish",))
    for line in report.lines:
        click.echo(line)
    if validate:
        click.echo(f"STAC catalog valid (STAC 1.1.0, offline): {validate_store(st, site.id)} document(s)")
    root = getattr(st, "root", None)
    if st.local_path("sites.json") is not None and root is not None:
        click.echo(
            f"open it: python -m http.server --bind 127.0.0.1 --directory {root} 8000  ->  "
            f"http://127.0.0.1:8000/dashboard/index.html#site={site.id}"
        )
    elif s3_public_read_policy(st):
        click.echo(
            "browsers read the bucket anonymously: apply a read policy such as "
            f"{s3_public_read_policy(st)} (or serve it through a proxy)"
        )


@main.command()
@click.option("--site", "site_file", required=True, type=click.Path(dir_okay=False), help="Site file (YAML).")
@_store_options
@click.option("--port", default=0, show_default=True, type=int, help="Port on 127.0.0.1 (0: any free port).")
@click.option("--no-track", is_flag=True, help="Only store corrections; the next `track` re-propagates.")
@click.option("--open", "open_browser", is_flag=True, help="Open the URL in the default browser.")
def ui(site_file: str, store: str, s3_endpoint: str | None, port: int, no_track: bool, open_browser: bool) -> None:
    """Refine a site in the browser: pick a frame, click scar / not-scar points, submit (as `scarmon refine`)."""
    from scarmon.store.backends import open_store
    from scarmon.ui.server import make_server

    st = open_store(store, endpoint_url=s3_endpoint)
    server = make_server(site_file, st, port=port, retrack=not no_track)
    click.echo(f"scarmon ui on loopback only; open (the token in it is the key): {server.url}")
    click.echo("Ctrl-C stops it.")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# --- is every site alive? (issue 13) ------------------------------------------------------------------------------


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


@main.command("status")
@_store_options
@click.option(
    "--sites",
    "sites_dir",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="Only the sites of the site files in this folder (default: every site in the store).",
)
@click.option(
    "--stale-hours",
    default=48.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="A site whose last tick is older than this is reported 'stale'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for monitoring systems).")
def status(store: str, s3_endpoint: str | None, sites_dir: str | None, stale_hours: float, as_json: bool) -> None:
    """Is every site alive? Per site: the last tick and its outcome, the last clear frame and its age, the alert
    state and level, the outbox depth, whether the site lock is held, the last error. Reads only.
    Exit status: 0 when every site is ok, 1 when any is stale, failing or never checked."""
    import json

    from scarmon.service.health import sites_health
    from scarmon.site import SiteError, load_site
    from scarmon.store.backends import open_store

    st = open_store(store, endpoint_url=s3_endpoint)
    names: dict[str, str | None] | None = None
    if sites_dir:
        files = sorted(p for p in Path(sites_dir).iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise click.ClickException(f"no site files (*.yaml) in {sites_dir}")
        names = {}
        for path in files:
            try:
                site = load_site(path)
            except SiteError as exc:
                click.echo(f"warning: {exc}", err=True)
                continue
            names[site.id] = site.display_name
    rows, warnings = sites_health(st, names=names, stale_hours=stale_hours)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    from scarmon import __version__

    if as_json:
        click.echo(
            json.dumps(
                {
                    "format": "scarmon.status/1",
                    "store": st.uri,
                    "scarmon_version": __version__,
                    "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "all_ok": all(r["health"] == "ok" for r in rows),
                    "sites": rows,
                },
                indent=1,
            )
        )
    else:
        head = ("site", "health", "last tick", "outcome", "last clear image", "alert", "outbox", "lock", "last error")
        table = [head] + [
            (
                r["site"],
                r["health"],
                f"{str(r['last_tick'])[:16].replace('T', ' ')} ({_age_text(r['last_tick_age_s'])} ago)"
                if r["last_tick"]
                else "never",
                r["last_tick_outcome"] or "-",
                f"{r['last_clear_frame']} ({r['last_clear_frame_age_days']} d ago)"
                if r["last_clear_frame"]
                else "none",
                f"{r['alert_state']}/{r['alert_level']}"
                + (f", blind {r['days_since_confident']} d" if r.get("blind") else "")
                + (
                    f", pending {r['pending_growth']['level']} since {r['pending_growth']['first_date']}"
                    if r.get("pending_growth")
                    else ""
                ),
                str(r["outbox"]),
                "held" if r["lock"]["held"] else "free",
                (r["last_error"] or "-")[:80],
            )
            for r in rows
        ]
        widths = [max(len(row[k]) for row in table) for k in range(len(head) - 1)]
        for row in table:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        bad = [r["site"] for r in rows if r["health"] != "ok"]
        click.echo(f"{len(rows) - len(bad)} of {len(rows)} site(s) ok" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    sys.exit(0 if all(r["health"] == "ok" for r in rows) else 1)


if __name__ == "__main__":
    main()
