"""One monitoring tick for one site, as plain functions: ingest → track → alert → notify → publish.

`flows/` wraps these stages as Prefect tasks; `tick` runs them in order without Prefect (for a Dask worker, a test,
or cron). Every stage is idempotent, so re-running a tick appends nothing and alerts nothing new.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from scarmon.store import keys
from scarmon.alerts.history import load_state, outbox, record
from scarmon.alerts.rules import AlertState, replay
from scarmon.site import Site
from scarmon.store.backends import Store


@dataclass
class TickReport:
    site_id: str
    status: str = "ok"                                   # ok | busy | failed
    appended: int = 0
    rejected: int = 0
    skipped: int = 0
    tracked: int = 0
    frames: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    failed_deliveries: list[tuple[str, str]] = field(default_factory=list)
    outbox: int = 0
    alert_state: str = "none"
    alert_level: str = "none"
    seconds: float = 0.0
    pid: int = field(default_factory=os.getpid)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.status != "ok":
            return f"site {self.site_id}: {self.status}: {self.message}"
        ev = ", ".join(f"{e['date']} {e['event']} {e['level']}" for e in self.events) or "no alert events"
        return (f"site {self.site_id}: {self.appended} frame(s) appended, {self.tracked} tracked, {ev}; "
                f"{len(self.sent)} notification(s) sent, {self.outbox} waiting in the outbox; alert state "
                f"{self.alert_state} ({self.alert_level}) [{self.seconds:.1f} s]")


def channels_for(site: Site) -> list[str]:
    return [c for c, on in (("email", bool(site.recipients.email)), ("webhook", site.recipients.webhook)) if on]


def alert_stage(site: Site, store: Store, *, rebuild: bool = False, suppress: bool = False
                ) -> tuple[AlertState, list[dict[str, Any]], int]:
    """Step the site's alert state machine over the series rows it has not seen; persist state, history, outbox.
    `rebuild` replays the whole series from a fresh state (after a backfill); `suppress` records without notifying."""
    from scarmon.tracking.pipeline import read_series

    rows = read_series(store, site.id)
    prior = AlertState(site=site.id) if rebuild else load_state(store, site.id)
    state, events = replay(rows, site=site.id, rules=site.alerts, prior=prior)
    queued = record(store, site.id, state, events, notify_on=site.alerts.notify_on, channels=channels_for(site),
                    suppress=suppress)
    return state, [e.to_dict() for e in events], len(queued)


def notify_stage(site: Site, store: Store, **kwargs: Any):  # type: ignore[no-untyped-def]
    from scarmon.alerts.notify import deliver

    return deliver(store, site.id, recipients=list(site.recipients.email), site_name=site.display_name, **kwargs)


def publish_stage(site: Site, store: Store, report: TickReport) -> None:
    """Products (polygons, quicklooks, plots, STAC catalog, dashboard), then a small status document of the last
    tick. A failed publish keeps the previous products readable and marks the site in `sites.json`."""
    from scarmon.alerts.history import read_history
    from scarmon.products.publish import publish_failed, publish_site

    try:
        publish_site(site, store)
    except Exception as exc:
        publish_failed(store, site, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise

    doc = {"site": site.id, "name": site.display_name, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), "frames": report.frames, "alert_state": report.alert_state,
        "alert_level": report.alert_level, "outbox": report.outbox, "alerts": len(read_history(store, site.id)),
        "series": keys.series_json(site.id), "history": keys.alert_history(site.id)}
    store.put(keys.status(site.id), json.dumps(doc, indent=1).encode(), content_type="application/json")


def tick(site: Site, store: Store, catalog: Any, *, start: dt.date | None = None, end: dt.date | None = None,
         notify: bool = True, rebuild_alerts: bool = False, lock: bool = True, **notify_kwargs: Any) -> TickReport:
    """The whole tick without Prefect. Holds the site lock; a busy site gives status 'busy' and does nothing."""
    from scarmon.ingest.pipeline import ingest
    from scarmon.store.lock import SiteBusy, site_lock
    from scarmon.tracking.pipeline import track_site

    t0 = time.monotonic()
    report = TickReport(site.id)
    try:
        with site_lock(store, site.id) if lock else _null():
            ing = ingest(site, catalog, store, start=start, end=end)
            report.appended, report.rejected, report.skipped = len(ing.appended), len(ing.rejected), len(ing.skipped)
            trk = track_site(site, store)
            report.tracked, report.frames = len(trk.tracked), trk.total_frames
            state, report.events, _ = alert_stage(site, store, rebuild=rebuild_alerts, suppress=not notify)
            if notify:
                d = notify_stage(site, store, **notify_kwargs)
                report.sent, report.failed_deliveries = d.sent, d.failed
            report.outbox = len(outbox(store, site.id))
            report.alert_state, report.alert_level = state.status, ("none", "watch", "warning", "alarm")[state.level]
            report.seconds = time.monotonic() - t0
            publish_stage(site, store, report)
    except SiteBusy as exc:
        report.status, report.message = "busy", str(exc)
    report.seconds = time.monotonic() - t0
    return report


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None
