"""Fan-out of a monitoring tick over many sites: one plain function per site (`run_site`) and the ways to map it
over site files (threads here, Dask workers in `scarmon.service.dask`).

This module imports no Prefect: a Dask worker unpickling `run_site` imports only scarmon's runner and stages (Prefect
alone takes seconds to import, per worker process). A site costs no Prefect API call: the fan-out flow
(`scarmon.service.flows.monitor_all`) records one summary and one artifact for the whole run.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from scarmon import defaults
from scarmon.ingest.discovery import Catalog, open_catalog
from scarmon.service import runner
from scarmon.service.runner import TickOptions
from scarmon.site import load_site
from scarmon.store.backends import Store, open_store
from scarmon.store.lock import SiteBusy

_stores: dict[tuple[str, str | None], Store] = {}
_stores_mutex = threading.Lock()


def shared_store(store: str, s3_endpoint: str | None) -> Store:
    """One store (one boto3 client, thread-safe) per URI per process, reused by every site a worker runs."""
    with _stores_mutex:
        if (store, s3_endpoint) not in _stores:
            _stores[(store, s3_endpoint)] = open_store(store, endpoint_url=s3_endpoint)
        return _stores[(store, s3_endpoint)]


_catalogs = threading.local()


def shared_catalog(catalog: str | None, collection: str | None) -> Catalog:
    """One catalog client per thread (HTTP sessions are not shared between threads), reused across sites."""
    cache: dict[tuple[str | None, str | None], Catalog] = _catalogs.__dict__.setdefault("cache", {})
    key = (catalog, collection)
    if key not in cache:
        cache[key] = open_catalog(catalog, collection=collection)
    return cache[key]


def run_site(
    site_file: str,
    store: str,
    catalog: str | None,
    collection: str | None,
    s3_endpoint: str | None,
    end: dt.date | None,
    notify: bool,
) -> dict[str, Any]:
    """A whole tick of one site as a plain function, for thread and Dask workers: no Prefect API call per site
    (the fan-out flow records one summary), stages retried in-process with the runner's policy, store client and
    catalog reused across the sites a worker runs. A busy site returns status 'busy'."""
    site = load_site(site_file)
    try:
        report = runner.tick(
            site,
            shared_store(store, s3_endpoint),
            shared_catalog(catalog, collection),
            opts=TickOptions(end=end, notify=notify),
            run_stage=runner.run_retrying,
        )
    except SiteBusy as exc:
        report = runner.TickReport(site.id, status="busy", message=str(exc))
    # the worker's memory high-water mark so far (Linux: KiB), for sizing workers and pods
    return {**report.to_dict(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SiteOutcome = tuple[str, "dict[str, Any] | BaseException"]
MapSites = Callable[[list[Path], tuple[Any, ...]], Iterator[SiteOutcome]]
"""Runs `run_site(str(file), *args)` for each site file; yields (file name, report or the exception), in any order."""


def thread_map(files: list[Path], args: tuple[Any, ...]) -> Iterator[SiteOutcome]:
    """Sites on a pool of $SCARMON_THREADS threads (default defaults.FANOUT_THREADS) in this process."""
    n = int(os.environ.get("SCARMON_THREADS") or defaults.FANOUT_THREADS)
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="site") as pool:
        futures = {pool.submit(run_site, str(f), *args): f.name for f in files}
        for fut in as_completed(futures):
            exc = fut.exception()
            yield futures[fut], (exc if exc is not None else fut.result())


__all__ = ["MapSites", "SiteOutcome", "run_site", "shared_catalog", "shared_store", "thread_map"]
