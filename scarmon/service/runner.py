"""The one stage runner: every command that changes a site's data runs through here.

    ingest → track → alert → notify → publish          (`tick`, or any subset of it: `run_stages`)
    store correction → track → rebuild alerts → publish (`refine`)

The runner holds the site lock for the whole run (a busy site raises `SiteBusy`, which names who holds it), runs
each stage through a `StageRunner` hook and reports what happened in a `TickReport`. Callers differ only in the
hook they pass:

    run_plain      the CLI, the demo, tests: each stage once, errors raised as they are
    run_retrying   Dask/thread workers and cron: transient errors retried in-process with the stage's policy
    prefect_stage  (scarmon.service.flows) each stage a Prefect task with the stage's policy

The retry policy per stage lives here (`RETRY`) and retries only transient errors (`scarmon.errors.is_transient`):
network failures, HTTP 429/5xx, lost store races. Bad input is never retried.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from scarmon import defaults
from scarmon.alerts.history import load_state, outbox, read_history, record
from scarmon.alerts.rules import LEVELS, AlertState, replay
from scarmon.errors import ScarmonError, is_transient
from scarmon.ingest.discovery import Catalog
from scarmon.service.health import alert_view
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import Store
from scarmon.store.lock import LeaseLost, check_lease, site_lock
from scarmon.store.sequence import load_manifest

T = TypeVar("T")
log = logging.getLogger(__name__)

STAGES = ("ingest", "track", "alert", "notify", "publish")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a stage is retried after a transient error, and the waits between tries."""

    retries: int = 0
    delays_s: tuple[float, ...] = ()


def _delays() -> tuple[float, ...]:
    """SCARMON_TASK_RETRY_DELAYS="1,1,1" shortens backoff (tests); default defaults.TASK_RETRY_DELAYS_S."""
    raw = os.environ.get("SCARMON_TASK_RETRY_DELAYS")
    return tuple(float(x) for x in raw.split(",")) if raw else tuple(defaults.TASK_RETRY_DELAYS_S)


def retry_policy(stage: str) -> RetryPolicy:
    """Network-bound stages (catalog search and COG reads; SMTP/webhook and the store) retry transient errors;
    tracking, alert rules and publishing are deterministic over the store (its races are retried inside)."""
    if stage in ("ingest", "notify"):
        return RetryPolicy(defaults.TASK_RETRIES, _delays())
    return RetryPolicy()


class StageRunner(Protocol):
    """Runs one named stage (a thunk) and returns its result."""

    def __call__(self, name: str, fn: Callable[[], T]) -> T: ...


def run_plain(name: str, fn: Callable[[], T]) -> T:
    """Each stage once; errors propagate unchanged."""
    return fn()


def run_retrying(name: str, fn: Callable[[], T]) -> T:
    """Each stage with its retry policy, in-process: transient errors are retried after the policy's delays."""
    policy = retry_policy(name)
    for attempt in range(policy.retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.retries or not is_transient(exc):
                raise
            delay = policy.delays_s[min(attempt, len(policy.delays_s) - 1)] if policy.delays_s else 0.0
            log.warning("stage %s failed (%s); retry %d/%d in %.0f s", name, exc, attempt + 1, policy.retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


@dataclass
class TickReport:
    """What one run did to one site (the same shape for the CLI, the flows and the Dask path)."""

    site_id: str
    status: str = "ok"  # ok | busy | failed
    stages: list[str] = field(default_factory=list)
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
    lines: list[str] = field(default_factory=list)  # each stage's own one-line summary, in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.status != "ok":
            return f"site {self.site_id}: {self.status}: {self.message}"
        ev = ", ".join(f"{e['date']} {e['event']} {e['level']}" for e in self.events) or "no alert events"
        return (
            f"site {self.site_id}: {self.appended} frame(s) appended, {self.tracked} tracked, {ev}; "
            f"{len(self.sent)} notification(s) sent, {self.outbox} waiting in the outbox; alert state "
            f"{self.alert_state} ({self.alert_level}) [{self.seconds:.1f} s]"
        )


@dataclass(frozen=True)
class TickOptions:
    """Everything a run may vary besides the site, the store and the catalog."""

    start: dt.date | None = None
    end: dt.date | None = None
    notify: bool = True
    rebuild_alerts: bool = False
    history_note: str | None = None  # how rebuilt alert rows are labelled: backfill, refine
    from_start: bool = False
    tracker: Any = None  # a scarmon.tracking.trackers.Tracker; None: by config
    ingest_progress: Callable[[int], object] | None = None
    ingest_total: Callable[[int], object] | None = None
    track_progress: Callable[[int], object] | None = None
    track_total: Callable[[int], object] | None = None
    notify_kwargs: dict[str, Any] = field(default_factory=dict)


class NoSequence(ScarmonError):
    """A command that needs a site's stored sequence found none (wrong --store, or nothing ingested yet)."""


def require_sequence(store: Store, site_id: str) -> None:
    """Refuse to work on a site the store has never seen, instead of creating an empty one."""
    if not store.exists(keys.manifest(site_id)):
        raise NoSequence(
            f"no sequence for site {site_id} in store {store.uri}: check --store, or run "
            f"`scarmon ingest --site ...` first"
        )


@contextmanager
def site_session(store: Store, site_id: str, *, lock: bool = True) -> Iterator[None]:
    """The site lease around a run (SiteBusy if another run holds it), renewed by a heartbeat while the run works;
    `lock=False` for callers that hold it. Inside, `check_lease(store, site_id)` raises LeaseLost once it is lost."""
    if not lock:
        yield
        return
    with site_lock(store, site_id):
        yield


def _leased(store: Store, site_id: str, run_stage: StageRunner) -> StageRunner:
    """`run_stage` that first checks the site lease: a run that lost it stops before the stage's first write."""

    def run(name: str, fn: Callable[[], T]) -> T:
        check_lease(store, site_id)
        return run_stage(name, fn)

    return run


# --- the stages (each a plain function of the site and the store) ------------------------------------------------


def ingest_stage(site: Site, store: Store, catalog: Catalog, opts: TickOptions, report: TickReport) -> None:
    from scarmon.ingest.pipeline import ingest

    ing = ingest(
        site, catalog, store, start=opts.start, end=opts.end, progress=opts.ingest_progress, on_scenes=opts.ingest_total
    )
    report.appended, report.rejected, report.skipped = len(ing.appended), len(ing.rejected), len(ing.skipped)
    report.lines.append(ing.summary())


def track_stage(site: Site, store: Store, opts: TickOptions, report: TickReport) -> None:
    from scarmon.tracking.pipeline import track_site

    trk = track_site(
        site,
        store,
        tracker=opts.tracker,
        from_start=opts.from_start,
        progress=opts.track_progress,
        on_frames=opts.track_total,
    )
    report.tracked, report.frames = len(trk.tracked), trk.total_frames
    report.lines.append(trk.summary())


def channels_for(site: Site) -> list[str]:
    return [c for c, on in (("email", bool(site.recipients.email)), ("webhook", site.recipients.webhook)) if on]


def alert_stage(
    site: Site, store: Store, *, rebuild: bool = False, suppress: bool = False, note: str | None = None
) -> tuple[AlertState, list[dict[str, Any]], int]:
    """Step the site's alert state machine over the series rows it has not seen; persist state, history, outbox.
    `rebuild` replays the whole series from a fresh state (after a backfill or a refinement); `suppress` records
    without notifying; `note` labels the recorded rows (default: 'backfill' when suppressed).

    When tracking has since corrected rows the machine had already stepped (a seasonal revision: winter growth
    confirmed by the growing season), the whole corrected series is replayed from a fresh state, so the history
    and state describe the corrected past; of its events, those before the first corrected row are the ones already
    recorded (kept, never re-sent); from it on, an event covered by one recorded as told since (same kind, same or
    higher level: the live alert of the same growth) is recorded as told, the others are notified now."""
    from scarmon.tracking.pipeline import read_observations, revised_since

    observations = read_observations(store, site.id)
    prior = AlertState(site=site.id) if rebuild else load_state(store, site.id)
    revised = revised_since(observations, prior.last[0]) if prior.last and not rebuild else None
    if revised is not None:
        log.info("site %s: series corrected from %s on: alert history replayed from the start", site.id, revised)
        state, events = replay(observations, site=site.id, rules=site.alerts, prior=AlertState(site=site.id))
        # Told already: everything before the correction, and from it on what an event sent since then covers
        # (same kind, same or higher level: the live alert of the same growth, now dated where it happened).
        sent_since = [
            (h.get("event"), LEVELS.index(h["level"]) if h.get("level") in LEVELS else len(LEVELS))
            for h in read_history(store, site.id)
            if str(h.get("date", "")) >= revised and h.get("notified") is not False
        ]

        def told(e: Any) -> bool:
            return e.date < revised or any(k == e.event and lv >= LEVELS.index(e.level) for k, lv in sent_since)

        record(
            store,
            site.id,
            state,
            [e for e in events if told(e)],
            notify_on=(),
            channels=(),
            suppress=True,
            note="revised",
        )
        events = [e for e in events if not told(e)]
    else:
        state, events = replay(observations, site=site.id, rules=site.alerts, prior=prior)
    queued = record(
        store,
        site.id,
        state,
        events,
        notify_on=site.alerts.notify_on,
        channels=channels_for(site),
        suppress=suppress,
        note=note or "backfill",
    )
    return state, [e.to_dict() for e in events], len(queued)


def notify_stage(site: Site, store: Store, **kwargs: Any) -> Any:
    """Deliver the site's outbox (a failed delivery stays there for the next run); a DeliveryReport."""
    from scarmon.alerts.notify import deliver

    return deliver(store, site.id, recipients=list(site.recipients.email), site_name=site.display_name, **kwargs)


def publish_stage(site: Site, store: Store, report: TickReport) -> None:
    """Products (polygons, quicklooks, plots, STAC catalog, dashboard), then a small status document of the run.
    A failed publish keeps the previous products readable and marks the site in `sites.json`."""
    from scarmon.products.publish import publish_failed, publish_site

    try:
        pub = publish_site(site, store)
    except Exception as exc:
        publish_failed(store, site, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    report.lines.append(pub.summary())
    write_status(site, store, report)


def _alert_view(store: Store, site_id: str, today: dt.date) -> dict[str, Any]:
    """What the alert rules see now (blind? growth waiting for a second frame?), or why it cannot be read: status.json
    must record a failed tick even when the alert state is what failed."""
    try:
        return alert_view(load_state(store, site_id), today)
    except (ValueError, TypeError, KeyError) as exc:
        return {"blind": None, "alert_view_error": f"{keys.alert_state(site_id)} unreadable: {exc}"}


def write_status(site: Site, store: Store, report: TickReport) -> None:
    """`{site}/status.json`: the last run, for people, the dashboard ('last checked') and monitoring systems (the
    same figures as `scarmon status --json`)."""
    from scarmon import __version__

    now = dt.datetime.now(dt.UTC)
    frames = load_manifest(store, site.id)[0].frames if store.exists(keys.manifest(site.id)) else ()
    last = frames[-1].date if frames else None
    doc = {
        "site": site.id,
        "name": site.display_name,
        "updated_at": now.isoformat(timespec="seconds"),
        "outcome": report.status,
        "stages": list(report.stages),
        "last_error": (report.message or None) if report.status != "ok" else None,
        "appended": report.appended,
        "tracked": report.tracked,
        "frames": report.frames or len(frames),
        "last_frame_date": last,
        "last_frame_age_days": (now.date() - dt.date.fromisoformat(last)).days if last else None,
        "alert_state": report.alert_state,
        "alert_level": report.alert_level,
        **_alert_view(store, site.id, now.date()),
        "outbox": report.outbox,
        "alerts": len(read_history(store, site.id)),
        "seconds": round(report.seconds, 1),
        "scarmon_version": __version__,
        "series": keys.series_json(site.id),
        "history": keys.alert_history(site.id),
    }
    store.put(keys.status(site.id), json.dumps(doc, indent=1).encode(), content_type="application/json")


# --- runs --------------------------------------------------------------------------------------------------------


def run_stages(
    site: Site,
    store: Store,
    catalog: Catalog | None,
    stages: Sequence[str],
    *,
    opts: TickOptions | None = None,
    run_stage: StageRunner = run_plain,
    lock: bool = True,
) -> TickReport:
    """Run `stages` (in the order of STAGES) for one site under its lock. Raises SiteBusy for a busy site."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
    opts = opts or TickOptions()
    t0 = time.monotonic()
    report = TickReport(site.id, stages=[s for s in STAGES if s in stages])
    run_stage = _leased(store, site.id, run_stage)
    if "ingest" not in stages:
        require_sequence(store, site.id)  # before the lock: a wrong --store must not gain a site folder
    with site_session(store, site.id, lock=lock):
        try:
            _run_in_session(site, store, catalog, stages, opts, run_stage, report, t0)
        except Exception as exc:
            if "publish" in stages and not isinstance(exc, LeaseLost):  # a tick: status.json says it failed, why
                _record_failure(site, store, report, exc, t0)
            raise
    report.seconds = time.monotonic() - t0
    return report


def _record_failure(site: Site, store: Store, report: TickReport, exc: Exception, t0: float) -> None:
    report.status, report.seconds = "failed", time.monotonic() - t0
    report.message = (str(exc).splitlines() or [type(exc).__name__])[0]
    try:
        write_status(site, store, report)
    except Exception as status_exc:  # noqa: BLE001 - the store may be what failed; the run's own error is raised
        log.warning("site %s: could not record the failed run in %s: %s", site.id, keys.status(site.id), status_exc)


def _run_in_session(
    site: Site,
    store: Store,
    catalog: Catalog | None,
    stages: Sequence[str],
    opts: TickOptions,
    run_stage: StageRunner,
    report: TickReport,
    t0: float,
) -> None:
    """The stages themselves, in order, inside the site's session."""
    if "ingest" in stages:
        if catalog is None:
            raise ValueError("the ingest stage needs a catalog")
        run_stage("ingest", lambda: ingest_stage(site, store, catalog, opts, report))
    elif stages:
        require_sequence(store, site.id)
    if "track" in stages:
        run_stage("track", lambda: track_stage(site, store, opts, report))
    if "alert" in stages:
        state, report.events, _ = run_stage(
            "alert",
            lambda: alert_stage(
                site, store, rebuild=opts.rebuild_alerts, suppress=not opts.notify, note=opts.history_note
            ),
        )
        report.alert_state, report.alert_level = state.status, LEVELS[state.level]
    if "notify" in stages and opts.notify:
        delivery = run_stage("notify", lambda: notify_stage(site, store, **opts.notify_kwargs))
        report.sent, report.failed_deliveries = delivery.sent, delivery.failed
        report.lines.append(delivery.summary())
    report.outbox = len(outbox(store, site.id))
    if not report.frames:
        report.frames = len(load_manifest(store, site.id)[0].frames)
    report.seconds = time.monotonic() - t0
    if "publish" in stages:
        run_stage("publish", lambda: publish_stage(site, store, report))


def tick(
    site: Site,
    store: Store,
    catalog: Catalog,
    *,
    opts: TickOptions | None = None,
    run_stage: StageRunner = run_plain,
    lock: bool = True,
) -> TickReport:
    """One monitoring tick: ingest → track → alert → notify → publish, under the site lock."""
    return run_stages(site, store, catalog, STAGES, opts=opts, run_stage=run_stage, lock=lock)


@dataclass
class RefineReport:
    site_id: str
    corrections: list[str] = field(default_factory=list)
    undone: dict[str, Any] | None = None
    tick: TickReport | None = None

    def summary(self) -> str:
        parts = []
        if self.corrections:
            parts.append(f"stored {len(self.corrections)} correction(s): {', '.join(self.corrections)}")
        if self.undone:
            parts.append(f"removed correction {self.undone['id']} on {self.undone['date']}")
        if self.tick is not None:
            parts.extend(self.tick.lines)
            if "alert" in self.tick.stages:
                parts.append(
                    f"alert history rebuilt from the corrected series: state {self.tick.alert_state} "
                    f"({self.tick.alert_level}), nothing re-sent"
                )
        return "\n".join(parts) or f"site {self.site_id}: nothing to do"


def refine(
    site: Site,
    store: Store,
    *,
    date: dt.date | None = None,
    points: Sequence[tuple[float, float, int]] = (),
    undo: str | None = None,
    retrack: bool = True,
    publish: bool | None = None,
    opts: TickOptions | None = None,
    run_stage: StageRunner = run_plain,
    lock: bool = True,
) -> RefineReport:
    """Interactive refinement, the one way (CLI, UI, flow): store the correction clicks on the frame of `date`
    (or undo one by id), re-track from the first corrected frame, rebuild the alert history from the corrected
    series (recorded with note 'refine', never re-sent: it re-describes the past) and republish the products if
    the site has any (`publish=None`) or when asked. With `retrack=False` only the correction is stored; the next
    tick re-tracks from its frame."""
    from scarmon.tracking.corrections import add_corrections, undo_correction

    if not (date and points) and not undo:
        raise ValueError("give a date with one or more points, or the id of a correction to undo")
    base = opts or TickOptions()
    opts = TickOptions(**{**_fields(base), "notify": False, "rebuild_alerts": True, "history_note": "refine"})
    report = RefineReport(site.id)
    require_sequence(store, site.id)
    with site_session(store, site.id, lock=lock):
        if date and points:
            report.corrections = add_corrections(store, site, date, points)
        if undo:
            report.undone = undo_correction(store, site, undo)
        if retrack:
            if publish is None:
                publish = store.exists(keys.products_index(site.id))
            stages = ["track", "alert", *(["publish"] if publish else [])]
            report.tick = run_stages(site, store, None, stages, opts=opts, run_stage=run_stage, lock=False)
    return report


def _fields(opts: TickOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__}


__all__ = [
    "STAGES",
    "NoSequence",
    "RefineReport",
    "RetryPolicy",
    "StageRunner",
    "TickOptions",
    "TickReport",
    "alert_stage",
    "notify_stage",
    "publish_stage",
    "refine",
    "require_sequence",
    "retry_policy",
    "run_plain",
    "run_retrying",
    "run_stages",
    "site_session",
    "tick",
]
