"""Prefect 3 flows of scarmon: `monitor_site`, `monitor_all`, `backfill`, `refine` (see flows/README.md)."""

from flows.monitor import backfill, monitor_all, monitor_site, refine, site_deployments

__all__ = ["backfill", "monitor_all", "monitor_site", "refine", "site_deployments"]
