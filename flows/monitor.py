"""Deployment entry points: `flows/monitor.py:monitor_site` and friends (see flows/README.md)."""

from scarmon.service.flows import backfill, monitor_all, monitor_site, refine

__all__ = ["backfill", "monitor_all", "monitor_site", "refine"]
