"""The Prefect face of the stage runner (scarmon.service.runner): flows that deployments and `scarmon monitor` run.

* `monitor_site`  one tick for one site: each stage a Prefect task with the runner's retry policy (transient errors
                  only). A busy site is skipped: a Completed state *named* 'Busy' with report status 'busy'
                  (`scarmon monitor` exits 75). A run that lost its site lease stops and ends Failed ('LeaseLost').
* `monitor_all`   every site file in a folder, sites in parallel (threads by default, Dask workers through
                  `scarmon.service.dask`); each site a task running the whole tick in-process; a failing site is
                  reported at the end without stopping the others; busy sites are listed and name the state 'Busy'.
* `refine`        the runner's refine: store correction clicks, re-track, rebuild the alert history, republish.
* `backfill`      a date range for one site: frames are inserted where they belong; the alert history is rebuilt
                  from the whole series and recorded without notifying anyone.

Bad input (a site file, a corrupt document) ends the flow run Failed with the one-line message the CLI prints, not a
traceback, and is never retried. Arguments are plain strings and dates so that deployments and remote workers can
pass them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Completed, Failed

from scarmon.errors import ScarmonError, is_transient
from scarmon.ingest.discovery import open_catalog
from scarmon.service import runner
from scarmon.service.fanout import MapSites, thread_map
from scarmon.service.runner import TickOptions, retry_policy
from scarmon.site import Site, SiteError, load_site
from scarmon.store.backends import Store, open_store
from scarmon.store.lock import LeaseLost, SiteBusy

T = TypeVar("T")


def _transient_only(task_: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only what `scarmon.errors.is_transient` calls transient."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


def prefect_stage(name: str, fn: Callable[[], T]) -> T:
    """The runner hook that runs each stage as a Prefect task with the stage's retry policy."""
    policy = retry_policy(name)
    stage_task = task(
        name=name,
        cache_policy=NONE,
        retries=policy.retries,
        retry_delay_seconds=list(policy.delays_s) or 0,
        retry_condition_fn=_transient_only,
    )(fn)
    result: T = stage_task()
    return result


def state_result(state: State[Any], *, raise_on_failure: bool = True) -> Any:
    """A finished flow run's result, read synchronously even when the caller's thread has an event loop (Prefect's
    `result` would hand back a coroutine there, e.g. in a process that also drove a browser)."""
    return state.result(raise_on_failure=raise_on_failure, _sync=True)  # type: ignore[call-overload]  # async_dispatch's _sync


def _open(store: str | None, s3_endpoint: str | None) -> Store:
    return open_store(env_defaults(store, None, None)[0], endpoint_url=s3_endpoint)


def env_defaults(store: str | None, catalog: str | None, collection: str | None) -> tuple[str, str | None, str | None]:
    """Flow parameters left unset come from the environment (a container or Kubernetes job sets them once):
    $SCARMON_STORE (default 'scarmon-store'), $SCARMON_CATALOG, $SCARMON_COLLECTION. The S3 endpoint comes from
    $SCARMON_S3_ENDPOINT_URL / $AWS_ENDPOINT_URL in the store itself."""
    return (
        store or os.environ.get("SCARMON_STORE") or "scarmon-store",
        catalog or os.environ.get("SCARMON_CATALOG") or None,
        collection or os.environ.get("SCARMON_COLLECTION") or None,
    )


def _user_error(exc: ScarmonError) -> State[Any]:
    get_run_logger().error(str(exc))
    return Failed(message=str(exc))


BUSY = "Busy"
"""Name of the state of a run skipped because another run holds the site (type Completed, so `scarmon monitor`
exits 75 and a schedule is not retried; the name shows in the UI and the API, and automations can match it)."""


def _busy(site_id: str, exc: SiteBusy) -> State[Any]:
    get_run_logger().warning("skipped: %s", exc)
    report = runner.TickReport(site_id, status="busy", message=str(exc)).to_dict()
    return Completed(name=BUSY, message=f"skipped, site busy: {exc}", data=report)


def _tick(
    site_file: str,
    store: str | None,
    catalog: str | None,
    collection: str | None,
    s3_endpoint: str | None,
    opts: TickOptions,
) -> dict[str, Any] | State[Any]:
    store, catalog, collection = env_defaults(store, catalog, collection)
    try:
        site = load_site(site_file)
        report = runner.tick(
            site,
            _open(store, s3_endpoint),
            open_catalog(catalog, collection=collection),
            opts=opts,
            run_stage=prefect_stage,
        )
    except SiteBusy as exc:
        return _busy(site.id, exc)
    except LeaseLost as exc:
        get_run_logger().error(str(exc))
        return Failed(name="LeaseLost", message=str(exc))
    except ScarmonError as exc:
        return _user_error(exc)
    get_run_logger().info(report.summary())
    return report.to_dict()


@flow(name="monitor-site", log_prints=True)
def monitor_site(
    site_file: str,
    store: str | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    s3_endpoint: str | None = None,
    end: dt.date | None = None,
    notify: bool = True,
) -> dict[str, Any] | State[Any]:
    """One monitoring tick of one site. `end` limits the search (replaying history); default: now."""
    return _tick(site_file, store, catalog, collection, s3_endpoint, TickOptions(end=end, notify=notify))


@flow(name="backfill", log_prints=True)
def backfill(
    site_file: str,
    start: dt.date,
    end: dt.date,
    store: str | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    s3_endpoint: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Ingest and track [start, end] for one site; rebuild the alert history from the whole series, recorded as
    backfill and not sent to anyone."""
    opts = TickOptions(start=start, end=end, notify=False, rebuild_alerts=True, history_note="backfill")
    return _tick(site_file, store, catalog, collection, s3_endpoint, opts)


class SitesFailed(ScarmonError):
    """Some sites of a monitor_all run failed; the others completed. `summary` holds every site's result."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message, summary)
        self.summary = summary or {}

    def __str__(self) -> str:
        return str(self.args[0])


def site_files(sites_dir: str | Path) -> list[Path]:
    """The site files of a folder (*.yaml, *.yml), sorted; a missing folder is an error that names it."""
    folder = Path(sites_dir)
    if not folder.is_dir():
        raise SiteError(f"{folder}: no such folder of site files")
    return sorted(folder.glob("*.y*ml"))


@flow(name="monitor-all", log_prints=True)
def monitor_all(
    sites_dir: str | None = None,
    store: str | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    s3_endpoint: str | None = None,
    end: dt.date | None = None,
    notify: bool = True,
) -> dict[str, Any] | State[Any]:
    """Every site file in `sites_dir` ($SCARMON_SITES, default 'sites'), in parallel on threads. Ends Failed (after
    all the others have finished) if any site failed; the message lists each failure and the state's data holds
    the summary of every site. Sites skipped as busy name the state 'Busy'."""
    return fan_out(sites_dir, store, catalog, collection, s3_endpoint, end, notify, thread_map)


def fan_out(
    sites_dir: str | None,
    store: str | None,
    catalog: str | None,
    collection: str | None,
    s3_endpoint: str | None,
    end: dt.date | None,
    notify: bool,
    map_sites: MapSites,
) -> dict[str, Any] | State[Any]:
    """The body of the fan-out flows: every site file through `map_sites`, one summary (and one artifact)."""
    log = get_run_logger()
    sites_dir = sites_dir or os.environ.get("SCARMON_SITES") or "sites"
    store, catalog, collection = env_defaults(store, catalog, collection)
    try:
        files = site_files(sites_dir)
    except ScarmonError as exc:
        return _user_error(exc)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    good = []
    for f in files:
        try:
            load_site(f)
        except SiteError as exc:
            failures[f.name] = str(exc)
            log.error(str(exc))
            continue
        good.append(f)
    for name, outcome in map_sites(good, (store, catalog, collection, s3_endpoint, end, notify)):
        if isinstance(outcome, BaseException):  # reported below, the other sites continue
            failures[name] = (
                str(outcome) if isinstance(outcome, ScarmonError) else f"{type(outcome).__name__}: {outcome}"
            )
            log.error("%s failed: %s", name, failures[name])
        else:
            results[name] = outcome
    results = dict(sorted(results.items()))
    failures = dict(sorted(failures.items()))
    busy = sorted(k for k, r in results.items() if r.get("status") == "busy")
    log.info("%d site(s): %d ok, %d busy, %d failed", len(files), len(results) - len(busy), len(busy), len(failures))
    if files:  # one table per run for the UI, instead of one task run (and its API calls) per site
        create_table_artifact(
            _site_table(results, failures),
            key="monitor-all-sites",
            description=f"monitoring tick over {len(files)} site(s)",
        )
    summary = {
        "sites": len(files),
        "ok": sorted(k for k in results if k not in busy),
        "busy": busy,
        "failed": failures,
        "results": results,
    }
    if failures:
        message = f"{len(failures)} of {len(files)} site(s) failed: " + "; ".join(
            f"{k}: {v}" for k, v in failures.items()
        )
        if busy:
            message += f"; {len(busy)} skipped as busy: {', '.join(busy)}"
        return Failed(message=message, data=SitesFailed(message, summary))
    if busy:
        message = f"{len(busy)} of {len(files)} site(s) skipped, busy (another run holds them): {', '.join(busy)}"
        log.warning(message)
        return Completed(name=BUSY, message=message, data=summary)
    return summary


def _site_table(results: dict[str, Any], failures: dict[str, str]) -> list[dict[str, Any]]:
    rows = [
        {
            "site": name,
            "status": r.get("status"),
            "appended": r.get("appended"),
            "tracked": r.get("tracked"),
            "alert": f"{r.get('alert_state')}/{r.get('alert_level')}",
            "seconds": round(r.get("seconds", 0), 2),
            "message": r.get("message", ""),
        }
        for name, r in results.items()
    ]
    return rows + [{"site": name, "status": "failed", "message": why} for name, why in failures.items()]


def site_deployments(
    sites_dir: str = "sites",
    *,
    store: str = "scarmon-store",
    catalog: str | None = None,
    collection: str | None = None,
    s3_endpoint: str | None = None,
) -> list[Any]:
    """One `monitor_site` deployment per site file, on the site's cron schedule (for `scarmon serve`)."""
    out = []
    for f in site_files(sites_dir):
        site: Site = load_site(f)
        out.append(
            monitor_site.to_deployment(
                name=site.id,
                cron=site.schedule,
                tags=["scarmon", site.id],
                parameters={
                    "site_file": str(f.resolve()),
                    "store": store,
                    "catalog": catalog,
                    "collection": collection,
                    "s3_endpoint": s3_endpoint,
                },
                description=f"Monitoring tick of {site.display_name} ({site.schedule} UTC)",
            )
        )
    return out


@flow(name="refine", log_prints=True)
def refine(
    site_file: str,
    store: str | None = None,
    date: dt.date | None = None,
    points: list[tuple[float, float, int]] | None = None,
    undo: str | None = None,
    s3_endpoint: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Apply corrections (add points on the frame of `date`, or undo one by id), re-track from the first corrected
    frame, rebuild the alert history from the corrected series (recorded as 'refine', not sent) and republish."""
    try:
        site = load_site(site_file)
        rep = runner.refine(
            site, _open(store, s3_endpoint), date=date, points=points or [], undo=undo, run_stage=prefect_stage
        )
    except ScarmonError as exc:
        return _user_error(exc)
    get_run_logger().info(rep.summary())
    tick = rep.tick
    return {
        "site_id": site.id,
        "corrections": rep.corrections,
        "undone": undo,
        "tracked": tick.tracked if tick else 0,
        "frames": tick.frames if tick else 0,
        "events": tick.events if tick else [],
        "alert_state": tick.alert_state if tick else "none",
    }
