"""Alert benchmark.

1. On the synthetic scenarios (scarmon.demo.synthetic.SCENARIOS), through the real pipeline (catalog → ingest → track →
   alert rules): every true growth event confirmed within 3 clear acquisitions of its date and first detected
   within 1; zero confirmed alerts on the stable seasonal control. One table per scenario, on the tracked areas and,
   to separate the alert rules from the tracker, on the true areas of the same frames (same low-confidence flags).
2. A monitoring tick over 50 sites with no new scenes against the local STAC API (stac-fastapi-pgstac on
   127.0.0.1), in seconds: with threads (monitor_all) and with 2 Dask worker processes (prefect-dask).

    .venv/bin/python bench/alerts_bench.py [--work DIR] [--skip-pipeline] [--skip-tick] [--sites 50]

A clear acquisition is a frame of the series not flagged low-confidence; lag 1 = the first one on or after the
event date (0 = detected on a low-confidence frame before any clear one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

START, END = "2021-06-01", "2023-06-01"


def pipeline(work: Path, scenario: str) -> tuple[list[dict], dict]:
    """Series rows and truth.json of `scenario`, computing them unless work/<scenario> has them already."""
    from scarmon.ingest.discovery import open_catalog
    from scarmon.ingest.pipeline import ingest
    from scarmon.site import parse_site
    from scarmon.store.backends import open_store
    from scarmon.demo.synthetic import demo_site, generate_catalog
    from scarmon.tracking.pipeline import read_series, track_site

    d = work / scenario
    site = parse_site(demo_site(scenario))
    items = d / "catalog" / "items.json"
    if not items.exists():
        generate_catalog(d / "catalog", site, scenario=scenario, start=START, end=END)
    store = open_store(str(d / "store"))
    if not read_series(store, site.id):
        ingest(site, open_catalog(str(items)), store)
        track_site(site, store)
    return read_series(store, site.id), json.loads((d / "catalog" / "truth.json").read_text())


def table(scenario: str, rows: list[dict], truth: dict, label: str) -> bool:
    from scarmon.alerts.rules import AlertObservation, detection_lags, replay

    obs = [AlertObservation.from_row(r) for r in rows]
    _, events = replay(obs, site=scenario)
    confirmed = [e for e in events if e.event in ("confirmed", "escalated")]
    ok = True
    print(f"\n{scenario} [{label}]: {len(obs)} frames, {sum(not o.low_confidence for o in obs)} clear; "
          f"{len(confirmed)} confirmed/escalated alert(s)")
    print(f"  {'event':28s} {'date':10s} {'first det.':>10s} {'confirmed':>10s}  result")
    evs = [tuple(e) for e in truth["events"]]
    for i, (day, name) in enumerate(evs):
        until = evs[i + 1][0] if i + 1 < len(evs) else None
        first, conf = detection_lags(obs, events, day, until)
        good = first is not None and first <= 1 and conf is not None and conf <= 3
        ok &= good
        print(f"  {name:28s} {day:10s} {str(first):>10s} {str(conf):>10s}  {'PASS' if good else 'FAIL'}")
    if not evs:
        control = scenario == "stable-seasonal"
        good = not confirmed if control else True
        ok &= good
        print(f"  {'(no discrete event)':28s} {'':10s} {'':>10s} {len(confirmed):>10d}  "
              + ("PASS (zero confirmed on the control)" if control and good else
                 "FAIL (false alarm on the control)" if control else "growth x2 over 2 years: informational"))
    for e in events:
        print(f"    {e.date} {e.event:11s} {e.level:7s} area {e.area_m2:>9,.0f} m² vs {e.baseline_m2 or 0:>9,.0f} m² "
              f"({e.baseline_kind}) {e.change_pct if e.change_pct is not None else 0:+.0f} %"
              + (" [low-confidence frame]" if e.low_confidence else ""))
    return ok


def true_areas(rows: list[dict], truth: dict) -> list[dict]:
    area = {a["date"]: a["scar_area_m2"] for a in truth["acquisitions"]}
    return [{**r, "area_m2": area.get(r["date"], r["area_m2"])} for r in rows]


def tick_bench(n_sites: int, work: Path) -> None:
    """50 sites, no new scenes: their search windows (from `start`) lie after the catalog's last scene."""
    import yaml

    from scarmon.service.flows import monitor_all
    from scarmon.service.dask import monitor_all_on_dask
    from scarmon.demo.synthetic import demo_site, generate_catalog
    from tests.stac_api import start_stac_api

    site = demo_site("creep-failure")
    items_path = generate_catalog(work / "tick-catalog", site, scenario="creep-failure", start="2021-06-01",
                                  end="2021-06-12")
    items = json.loads(items_path.read_text())["features"]
    sites = work / "tick-sites"
    sites.mkdir(exist_ok=True)
    for i in range(n_sites):
        (sites / f"site-{i:02d}.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(
            {**site, "id": f"site-{i:02d}", "start": "2023-01-01"}, default=str)), sort_keys=False))
    with start_stac_api(work / "stac") as api:
        api.load_collection(json.loads((work / "tick-catalog" / "collection.json").read_text()))
        api.load_items(items)
        print(f"\nlocal STAC API {api.url} ({len(items)} items) up in {api.startup_seconds:.0f} s")
        store = str(work / "tick-store")
        monitor_all(str(sites), store=store, catalog=api.url)  # warm-up: Prefect's ephemeral server, imports
        for label, run in (("threads (monitor_all)", lambda: monitor_all(str(sites), store=store, catalog=api.url)),
                           ("Dask, 2 worker processes", lambda: monitor_all_on_dask(
                               str(sites), store=store, catalog=api.url, n_workers=2))):
            t0 = time.perf_counter()
            summary = run()
            dt_s = time.perf_counter() - t0
            appended = sum(r["appended"] for r in summary["results"].values())
            print(f"tick over {len(summary['ok'])} sites, no new scenes, {label}: {dt_s:.1f} s "
                  f"({dt_s / n_sites * 1000:.0f} ms/site; {appended} appended; {len(summary['failed'])} failed; "
                  f"{len({r['pid'] for r in summary['results'].values()})} process(es))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="Reuse/keep pipeline outputs here (work/<scenario>/).")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-tick", action="store_true")
    ap.add_argument("--sites", type=int, default=50)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scarmon-alerts-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    if not args.skip_pipeline:
        from scarmon.demo.synthetic import SCENARIOS

        for scenario in SCENARIOS:
            t0 = time.perf_counter()
            rows, truth = pipeline(work, scenario)
            print(f"\n=== {scenario}: pipeline {time.perf_counter() - t0:.0f} s ===")
            ok &= table(scenario, rows, truth, "tracked areas")
            table(scenario, true_areas(rows, truth), truth, "true areas, same frames")
    if not args.skip_tick:
        tick_bench(args.sites, work)
    print("\nALL PASS" if ok else "\nSOME FAIL (see tables)")


if __name__ == "__main__":
    main()
