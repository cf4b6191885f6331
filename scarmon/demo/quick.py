"""The offline demo: a synthetic catalog for a demo site, ingested into a local store, with no network."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def write_demo_site(out: Path, scenario: str) -> Path:
    from scarmon.demo.synthetic import demo_site

    path = out / "site.yaml"
    site = demo_site(scenario)
    path.write_text(
        "# Synthetic demo site written by `scarmon demo`.\n" + yaml.safe_dump(_plain(site), sort_keys=False)
    )
    return path


def _plain(value: Any) -> Any:
    """YAML-safe copy (dates as ISO strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


def run_demo(out: Path, *, scenario: str, start: str, end: str, echo: Callable[[str], object]) -> None:
    """Generate the catalog, then ingest and track the whole history at once through the stage runner."""
    from scarmon.demo.synthetic import generate_catalog
    from scarmon.ingest.discovery import open_catalog
    from scarmon.service.runner import run_stages
    from scarmon.site import load_site
    from scarmon.store.backends import open_store

    out.mkdir(parents=True, exist_ok=True)
    site_path = write_demo_site(out, scenario)
    site = load_site(site_path)
    t0 = time.monotonic()
    items = generate_catalog(out / "catalog", site, scenario=scenario, start=start, end=end)
    echo(f"synthetic Sentinel-2 L2A catalog ({scenario}, {start} to {end}): {items} [{time.monotonic() - t0:.0f} s]")
    store = open_store(str(out / "store"))
    t0 = time.monotonic()
    report = run_stages(site, store, open_catalog(str(items)), ("ingest", "track"))
    for line in report.lines:
        echo(line)
    series = out / "store" / site.id / "series.csv"
    echo(
        f"ingested and tracked in {time.monotonic() - t0:.0f} s; store: {out / 'store'}; masks: "
        f"{out / 'store' / site.id / 'masks'}; area series: {series}"
    )
    _echo_series(series, echo)


def _echo_series(path: Path, echo: Callable[[str], object]) -> None:
    import csv

    rows = list(csv.DictReader(path.open()))
    echo(f"{'date':10s} {'area m2':>10s} {'change %':>9s} {'yoy %':>7s}  confidence")
    for r in rows:
        pct = f"{float(r['change_pct']):+.1f}" if r["change_pct"] else ""
        yoy = f"{float(r['same_season_change_pct']):+.0f}" if r["same_season_change_pct"] else ""
        flag = "LOW: " + r["low_confidence_reason"] if r["low_confidence"] == "True" else "ok"
        echo(f"{r['date']:10s} {float(r['area_m2']):10.0f} {pct:>9s} {yoy:>7s}  {flag}")
