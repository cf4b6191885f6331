"""Scale-out on a Dask cluster through prefect-dask: `monitor_all` with its site ticks on Dask workers.

    SCARMON_DASK_ADDRESS=tcp://scheduler:8786   use an existing cluster (dask-kubernetes, dask-gateway, SSH...)
    (unset)                                     start a LocalCluster of SCARMON_DASK_WORKERS (2) worker processes
"""

from __future__ import annotations

import os
from typing import Any

from prefect_dask import DaskTaskRunner

from scarmon.service.flows import monitor_all


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    address = address or os.environ.get("SCARMON_DASK_ADDRESS") or None
    if address:
        return DaskTaskRunner(address=address)
    n = n_workers or int(os.environ.get("SCARMON_DASK_WORKERS", "2"))
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})


def monitor_all_on_dask(*args: Any, address: str | None = None, n_workers: int | None = None, **kwargs: Any):
    """Run monitor_all once with its site ticks on Dask workers."""
    return monitor_all.with_options(name="monitor-all-dask", task_runner=dask_runner(address, n_workers))(*args, **kwargs)


monitor_all_dask = monitor_all.with_options(name="monitor-all-dask", task_runner=dask_runner())
"""Deployment entrypoint (deploy/prefect.yaml): flows/dask.py:monitor_all_dask."""
