"""Deployment entry point: `flows/dask.py:monitor_all_dask` (monitor_all with its site ticks on Dask workers)."""

from scarmon.service.dask import monitor_all_dask

__all__ = ["monitor_all_dask"]
