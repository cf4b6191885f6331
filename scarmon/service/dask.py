"""Scale-out on a Dask cluster: `monitor_all_dask`, the fan-out flow with its site ticks on Dask workers.

    SCARMON_DASK_ADDRESS=tcp://scheduler:8786   use an existing cluster (dask-kubernetes, dask-gateway, SSH...)
    (unset)                                     a LocalCluster of SCARMON_DASK_WORKERS (2) worker processes, started
                                                once per process and reused by later runs in it

Where the time of a no-op tick over many sites went with prefect-dask (each site a Prefect task run on a
`DaskTaskRunner`): the task engine on every worker (its own API client, a task run created and three state changes
recorded per site, the task's settings and context pickled along), a new LocalCluster per flow run (worker
processes spawned, scarmon and Prefect imported in each), and a new store client and catalog per site. Measured in
`bench/scale_bench.py`; docs in deploy/README.md. Now a site is a plain function on the worker
(`scarmon.service.fanout.run_site`, in a module that does not import Prefect): no Prefect call per site, the flow run records one summary artifact; workers
keep one store client and catalog per process/thread; the cluster is reused within a process.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State

from scarmon.service.fanout import MapSites, SiteOutcome, run_site
from scarmon.service.flows import fan_out

_clients: dict[str, Any] = {}
_clients_mutex = threading.Lock()


def dask_client(address: str | None = None, n_workers: int | None = None) -> Any:
    """A `distributed.Client`, one per scheduler address or LocalCluster size, reused for the life of the process
    (starting worker processes and importing scarmon in them is most of a small tick's cost)."""
    from distributed import Client, LocalCluster

    address = address or os.environ.get("SCARMON_DASK_ADDRESS") or None
    n = n_workers or int(os.environ.get("SCARMON_DASK_WORKERS") or "2")
    slot = address or f"local:{n}"
    with _clients_mutex:
        client = _clients.get(slot)
        if client is not None and client.status == "running":
            return client
        if address:
            client = Client(address, set_as_default=False)  # type: ignore[no-untyped-call]  # distributed is untyped
        else:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]  # distributed is untyped
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            )
            client = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]  # distributed is untyped
        _clients[slot] = client
        return client


def close_clients() -> None:
    """Close the clients (and LocalClusters) this process started."""
    with _clients_mutex:
        for client in _clients.values():
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
        _clients.clear()


def dask_map(address: str | None = None, n_workers: int | None = None) -> MapSites:
    """A `MapSites` that runs each site's `run_site` as one Dask task (not a Prefect task run)."""

    def map_sites(files: list[Path], args: tuple[Any, ...]) -> Iterator[SiteOutcome]:
        from distributed import as_completed

        if not files:
            return
        client = dask_client(address, n_workers)
        futures = client.map(
            run_site,
            [str(f) for f in files],
            *[[a] * len(files) for a in args],
            pure=False,
            key=[f"site-{f.stem}-{os.urandom(4).hex()}" for f in files],
        )
        names = {fut.key: f.name for fut, f in zip(futures, files, strict=True)}
        for fut in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]  # distributed is untyped
            try:
                outcome: dict[str, Any] | BaseException = fut.result()
            except Exception as exc:  # noqa: BLE001 - one site's failure, reported by the flow
                outcome = exc
            yield names[fut.key], outcome

    return map_sites


@flow(name="monitor-all-dask", log_prints=True)
def monitor_all_dask(
    sites_dir: str | None = None,
    store: str | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    s3_endpoint: str | None = None,
    end: dt.date | None = None,
    notify: bool = True,
    address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any] | State[Any]:
    """`monitor_all` with its site ticks on Dask workers ($SCARMON_DASK_ADDRESS, or a LocalCluster of
    $SCARMON_DASK_WORKERS processes). Deployment entry point: flows/dask.py:monitor_all_dask."""
    return fan_out(sites_dir, store, catalog, collection, s3_endpoint, end, notify, dask_map(address, n_workers))


def monitor_all_on_dask(*args: Any, address: str | None = None, n_workers: int | None = None, **kwargs: Any) -> Any:
    """Run the Dask fan-out flow once (the CLI's `monitor --sites --dask N`)."""
    return monitor_all_dask(*args, address=address, n_workers=n_workers, **kwargs)


__all__ = ["close_clients", "dask_client", "dask_map", "monitor_all_dask", "monitor_all_on_dask"]
