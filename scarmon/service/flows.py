"""Prefect flows around scarmon's stages. Tasks wrap library functions; order, retries and concurrency live here.

* `monitor_site`  one tick for one site: ingest (discover → screen → load → append) → track → alert → notify →
                  publish. Holds the site's store lock: a second run of the same site at the same time is skipped.
* `monitor_all`   every site file in a folder, sites in parallel (threads by default, Dask workers through
                  `scarmon.service.dask`); a failing site is reported at the end without stopping the others.
* `refine`        apply correction clicks, re-track from the corrected frame, rebuild the alert history.
* `backfill`      a date range for one site: frames are inserted where they belong; the alert history is rebuilt
                  from the whole series and recorded without notifying anyone.

Arguments are plain strings and dates so that deployments (prefect.yaml) and remote workers can pass them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from scarmon import defaults

RETRIES = dict(retries=defaults.TASK_RETRIES, retry_delay_seconds=list(defaults.TASK_RETRY_DELAYS_S))


def _retry_delays() -> list[int]:
    """SCARMON_TASK_RETRY_DELAYS="1,1,1" shortens backoff (tests); default defaults.TASK_RETRY_DELAYS_S."""
    raw = os.environ.get("SCARMON_TASK_RETRY_DELAYS")
    return [int(x) for x in raw.split(",")] if raw else list(defaults.TASK_RETRY_DELAYS_S)


def _open(store: str, s3_endpoint: str | None):  # type: ignore[no-untyped-def]
    from scarmon.store.backends import open_store

    return open_store(store, endpoint_url=s3_endpoint)


@task(name="ingest", cache_policy=NONE, retries=defaults.TASK_RETRIES, retry_delay_seconds=_retry_delays())
def ingest_task(site, store, catalog: str | None, collection: str | None, start: dt.date | None,
                end: dt.date | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Network-bound (STAC search, COG reads): retried with backoff. Idempotent: known scenes are skipped."""
    from scarmon.ingest.discovery import open_catalog
    from scarmon.ingest.pipeline import ingest

    report = ingest(site, open_catalog(catalog, collection=collection), store, start=start, end=end)
    get_run_logger().info(report.summary())
    return {"appended": len(report.appended), "rejected": len(report.rejected), "skipped": len(report.skipped),
            "found": report.found}


@task(name="track", cache_policy=NONE)
def track_task(site, store) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from scarmon.tracking.pipeline import track_site

    report = track_site(site, store)
    get_run_logger().info(report.summary())
    return {"tracked": len(report.tracked), "frames": report.total_frames}


@task(name="alert", cache_policy=NONE)
def alert_task(site, store, rebuild: bool = False, suppress: bool = False):  # type: ignore[no-untyped-def]
    from scarmon.service.runner import alert_stage

    state, events, queued = alert_stage(site, store, rebuild=rebuild, suppress=suppress)
    for e in events:
        get_run_logger().info("alert %s %s %s: area %.0f m², baseline %s m² (%s)", e["date"], e["event"], e["level"],
                              e["area_m2"], e["baseline_m2"], e["reason"])
    return state, events, queued


@task(name="notify", cache_policy=NONE, retries=defaults.TASK_RETRIES, retry_delay_seconds=_retry_delays())
def notify_task(site, store):  # type: ignore[no-untyped-def]
    """Delivers the outbox. A failed delivery is kept there (not raised), so retries here only cover the store."""
    from scarmon.service.runner import notify_stage

    report = notify_stage(site, store)
    (get_run_logger().warning if report.failed else get_run_logger().info)(report.summary())
    return report


@task(name="publish", cache_policy=NONE)
def publish_task(site, store, report) -> None:  # type: ignore[no-untyped-def]
    from scarmon.service.runner import publish_stage

    publish_stage(site, store, report)


def _tick(site_file: str, store: str, catalog: str | None, collection: str | None, s3_endpoint: str | None,
          start: dt.date | None, end: dt.date | None, notify: bool, rebuild: bool) -> dict[str, Any]:
    import time

    from scarmon.alerts.history import outbox
    from scarmon.store.lock import SiteBusy, site_lock
    from scarmon.service.runner import TickReport
    from scarmon.site import load_site

    t0 = time.monotonic()
    site = load_site(site_file)
    st = _open(store, s3_endpoint)
    report = TickReport(site.id)
    try:
        with site_lock(st, site.id):
            ing = ingest_task(site, st, catalog, collection, start, end)
            report.appended, report.rejected, report.skipped = ing["appended"], ing["rejected"], ing["skipped"]
            trk = track_task(site, st)
            report.tracked, report.frames = trk["tracked"], trk["frames"]
            state, report.events, _ = alert_task(site, st, rebuild=rebuild, suppress=not notify)
            if notify:
                d = notify_task(site, st)
                report.sent, report.failed_deliveries = d.sent, d.failed
            report.outbox = len(outbox(st, site.id))
            report.alert_state, report.alert_level = state.status, ("none", "watch", "warning", "alarm")[state.level]
            report.seconds = time.monotonic() - t0
            publish_task(site, st, report)
    except SiteBusy as exc:
        get_run_logger().warning(str(exc))
        report.status, report.message = "busy", str(exc)
    report.seconds = time.monotonic() - t0
    get_run_logger().info(report.summary())
    return report.to_dict()


@flow(name="monitor-site", log_prints=True)
def monitor_site(site_file: str, store: str = "scarmon-store", catalog: str | None = None,
                 collection: str | None = None, s3_endpoint: str | None = None, end: dt.date | None = None,
                 notify: bool = True) -> dict[str, Any]:
    """One monitoring tick of one site. `end` limits the search (replaying history); default: now."""
    return _tick(site_file, store, catalog, collection, s3_endpoint, None, end, notify, False)


@flow(name="backfill", log_prints=True)
def backfill(site_file: str, start: dt.date, end: dt.date, store: str = "scarmon-store", catalog: str | None = None,
             collection: str | None = None, s3_endpoint: str | None = None) -> dict[str, Any]:
    """Ingest and track [start, end] for one site; rebuild the alert history from the whole series, recorded as
    backfill and not sent to anyone."""
    return _tick(site_file, store, catalog, collection, s3_endpoint, start, end, False, True)


@task(name="site-tick", cache_policy=NONE, retries=1, retry_delay_seconds=_retry_delays()[:1])
def site_tick_task(site_file: str, store: str, catalog: str | None, collection: str | None,
                   s3_endpoint: str | None, end: dt.date | None, notify: bool) -> dict[str, Any]:
    """A whole tick in one task (for thread or Dask workers: no nested flow run, no API needed beyond the task's).
    Retrying it is safe: the tick is idempotent."""
    from scarmon.ingest.discovery import open_catalog
    from scarmon.service.runner import tick
    from scarmon.site import load_site

    site = load_site(site_file)
    report = tick(site, _open(store, s3_endpoint), open_catalog(catalog, collection=collection), end=end,
                  notify=notify)
    return report.to_dict()


class SitesFailed(RuntimeError):
    """Some sites of a monitor_all run failed; the others completed."""


@flow(name="monitor-all", log_prints=True)
def monitor_all(sites_dir: str = "sites", store: str = "scarmon-store", catalog: str | None = None,
                collection: str | None = None, s3_endpoint: str | None = None, end: dt.date | None = None,
                notify: bool = True) -> dict[str, Any]:
    """Every site file in `sites_dir`, in parallel. Raises SitesFailed at the end if any site failed, after all
    the others have finished; the message lists each failure."""
    from scarmon.site import SiteError, load_site

    log = get_run_logger()
    files = sorted(Path(sites_dir).glob("*.y*ml"))
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    futures = {}
    for f in files:
        try:
            load_site(f)
        except SiteError as exc:
            failures[f.name] = str(exc)
            continue
        futures[f.name] = site_tick_task.submit(str(f), store, catalog, collection, s3_endpoint, end, notify)
    for name, fut in futures.items():
        try:
            results[name] = fut.result()
            log.info("%s: %s", name, results[name].get("status"))
        except Exception as exc:  # noqa: BLE001 - reported below, others continue
            failures[name] = f"{type(exc).__name__}: {exc}"
            log.error("%s failed: %s", name, failures[name])
    summary = {"sites": len(files), "ok": sorted(results), "failed": failures, "results": results}
    if failures:
        raise SitesFailed(f"{len(failures)} of {len(files)} site(s) failed: "
                          + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    return summary


def site_deployments(sites_dir: str = "sites", *, store: str = "scarmon-store", catalog: str | None = None,
                     collection: str | None = None, s3_endpoint: str | None = None) -> list:
    """One `monitor_site` deployment per site file, on the site's cron schedule (for `scarmon serve`)."""
    from scarmon.site import load_site

    out = []
    for f in sorted(Path(sites_dir).glob("*.y*ml")):
        site = load_site(f)
        out.append(monitor_site.to_deployment(
            name=site.id, cron=site.schedule, tags=["scarmon", site.id],
            parameters={"site_file": str(f.resolve()), "store": store, "catalog": catalog, "collection": collection,
                        "s3_endpoint": s3_endpoint},
            description=f"Monitoring tick of {site.display_name} ({site.schedule} UTC)"))
    return out


@flow(name="refine", log_prints=True)
def refine(site_file: str, store: str = "scarmon-store", date: dt.date | None = None,
           points: list[tuple[float, float, int]] | None = None, undo: str | None = None,
           s3_endpoint: str | None = None) -> dict[str, Any]:
    """Apply corrections (add points on the frame of `date`, or undo one by id), re-track from the first corrected
    frame, and rebuild the alert history from the corrected series (recorded, not sent: it re-describes the past)."""
    from scarmon.tracking.corrections import add_corrections, undo_correction
    from scarmon.store.lock import site_lock
    from scarmon.site import load_site

    site = load_site(site_file)
    st = _open(store, s3_endpoint)
    with site_lock(st, site.id):
        added = add_corrections(st, site, date, points) if date and points else []
        if undo:
            undo_correction(st, site, undo)
        trk = track_task(site, st)
        state, events, _ = alert_task(site, st, rebuild=True, suppress=True)
    return {"site_id": site.id, "corrections": added, "undone": undo, **trk, "events": events,
            "alert_state": state.status}
