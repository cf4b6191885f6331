"""The alert rules before issue 9 (commit 821d7bd), verbatim but for sorted imports: the benchmark's "old rules".

Alert rules and the confirmation state machine. Pure: numbers in, numbers out, no I/O (see scarmon.alerts.history).

One observation is one tracked frame: its date, scar area and whether it is low-confidence. For each new
observation, `step(prior=state, observation=obs)` returns the new state and the events it caused:

    none ──(growth over the baseline)──► provisional ──(≥ confirm_count of the next confirm_window clear
     ▲                                       │            observations agree)──► confirmed ──(no further growth
     │                                       │                                     │   for finish_after clear
     └────────────(reset: not confirmed)─────┘                                     │   observations)──► finished
                                                                                   └─ renewed growth → escalated

Baseline (what 'growth' is measured against):
  * seasonal, when the history reaches back a year: median area of confident frames within ±season_window_days
    of the same day of year, in the most recent earlier year that has any (same phenology: summer regrowth
    shrinks an NDVI scar by tens of percent, so only the same season is comparable);
  * else rolling: upper envelope (max) over the last rolling_days of the 3-frame running median of confident
    frames (the running median drops a single odd frame; the max keeps the winter level through the summer dip);
  * raised to the acknowledged area (where the last alert finished) for a year, so growth already alerted is not
    alerted again, and slow creep alerts again only after another step of growth.
The frames of an open alert never feed the baseline: it stays what the site looked like before the alert.
A level (watch < warning < alarm) needs growth over the baseline of at least its relative AND absolute threshold.

Low-confidence frames (few clear pixels, a spike or dip against both neighbours) may raise a first detection but
never count towards confirmation, escalation or finishing.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from scarmon import defaults
from scarmon.site import AlertRules

LEVELS = ("none", "watch", "warning", "alarm")
"""Level names by rank; 0 = no growth."""

STATES = ("none", "provisional", "confirmed")
EVENTS = ("provisional", "confirmed", "escalating", "escalated", "finished", "reset")
STATE_VERSION = 1


class ObservationLike(Protocol):
    date: str
    scene_id: str
    area_m2: float
    low_confidence: bool


@dataclass(frozen=True)
class AlertObservation:
    """The part of a tracked frame the alert rules need (scarmon.tracking.features.Observation also fits)."""

    date: str
    scene_id: str
    area_m2: float
    low_confidence: bool = False
    clear_fraction: float | None = None
    low_confidence_reason: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlertObservation:
        """From a row of series.json / series.csv (CSV booleans are the strings 'True'/'False')."""
        low = row.get("low_confidence", False)
        if isinstance(low, str):
            low = low.strip().lower() == "true"
        clear = row.get("clear_fraction")
        return cls(
            date=str(row["date"]),
            scene_id=str(row["scene_id"]),
            area_m2=float(row["area_m2"]),
            low_confidence=bool(low),
            clear_fraction=None if clear in (None, "") else float(clear),
            low_confidence_reason=str(row.get("low_confidence_reason") or ""),
        )


@dataclass(frozen=True)
class Assessment:
    """One observation measured against a baseline."""

    level: int = 0
    baseline_m2: float | None = None
    baseline_kind: str = ""
    change_m2: float | None = None
    change_pct: float | None = None
    rule: str = ""


@dataclass(frozen=True)
class Candidate:
    """A detection waiting for confirmation: growth over `ref_m2` seen first on `date`."""

    date: str
    scene_id: str
    ref_m2: float
    level: int
    votes: tuple[int, ...] = ()  # level of each later clear observation (0: did not agree)
    by_level: bool = False  # agreement = reaching `level` (not growth over ref_m2)


@dataclass(frozen=True)
class AlertState:
    """Everything the machine remembers about one site; JSON-serialisable through to_dict/from_dict."""

    site: str = ""
    status: str = "none"  # none | provisional | confirmed
    level: int = 0  # of the open alert
    alert_id: str | None = None  # date_scene of the open alert's first detection
    baseline_m2: float | None = None  # frozen at first detection
    baseline_kind: str = ""
    candidate: Candidate | None = None  # pending first detection or escalation
    calm: int = 0  # clear observations without further growth (confirmed)
    detected_m2: float = 0.0  # area at the open alert's latest (first or renewed) detection
    history: tuple[tuple[str, float], ...] = ()  # confident (date, area) outside open alerts
    episode: tuple[tuple[str, float], ...] = ()  # confident (date, area) of the open alert
    acknowledged: tuple[str, float] | None = None  # (date, area) the last alert finished at
    last: tuple[str, str] | None = None  # (date, scene_id) of the last observation stepped
    observations: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = STATE_VERSION
        d["level_name"] = LEVELS[self.level]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertState:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cand = d.get("candidate")
        if cand:
            d["candidate"] = Candidate(**{**cand, "votes": tuple(cand.get("votes", ()))})
        for k in ("history", "episode"):
            d[k] = tuple((str(a), float(b)) for a, b in d.get(k, ()))
        for k in ("acknowledged", "last"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class AlertEvent:
    """One transition of the machine, as kept in alerts.jsonl and sent to recipients."""

    site: str
    date: str  # acquisition date of the frame that caused it
    scene_id: str
    event: str  # provisional | confirmed | escalating | escalated | finished | reset
    state: str  # state after the event: provisional | confirmed | finished | reset
    level: str  # watch | warning | alarm (the alert's level after the event)
    area_m2: float
    baseline_m2: float | None
    baseline_kind: str
    change_m2: float | None
    change_pct: float | None
    alert_id: str  # date_scene of the alert's first detection
    first_date: str  # date of the first detection
    low_confidence: bool = False
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across re-runs: the same frame and transition always give the same id."""
        return f"{self.date}_{self.scene_id}_{self.event}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertEvent:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --- Baselines -----------------------------------------------------------------------------------------------------


def _day(s: str) -> dt.date:
    return dt.date.fromisoformat(s[:10])


def seasonal_baseline(history: Iterable[tuple[str, float]], date: str, window_days: int) -> tuple[float, str] | None:
    """Median area within ±window_days of `date`'s day of year in the most recent earlier year with frames there."""
    day = _day(date)
    hist = list(history)
    for years in range(1, 4):
        target = day - dt.timedelta(days=round(365.25 * years))
        near = [a for d, a in hist if abs((_day(d) - target).days) <= window_days and _day(d) < day]
        if near:
            return float(statistics.median(near)), f"same season {target.year}"
    return None


def envelope(values: list[float]) -> float | None:
    """Max of the 3-point running median; the newest value only counts as far as its predecessor supports it, so a
    single spike at the end (not yet known as one) does not lift the envelope."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    smooth = [
        statistics.median(values[max(0, i - 1) : i + 2]) if 0 < i < len(values) - 1 else None
        for i in range(len(values))
    ]
    smooth[0] = min(values[0], values[1])
    smooth[-1] = min(values[-1], values[-2])
    return float(max(smooth))  # type: ignore[type-var]


def rolling_baseline(history: Iterable[tuple[str, float]], date: str, days: int) -> float | None:
    day = _day(date)
    return envelope([a for d, a in history if 0 < (day - _day(d)).days <= days])


def level_of(change_m2: float, change_pct: float, rules: AlertRules) -> int:
    """Highest level whose relative AND absolute thresholds the growth reaches; 0 if none."""
    level = 0
    for rank, lv in enumerate((rules.watch, rules.warning, rules.alarm), start=1):
        if change_pct >= lv.pct and change_m2 >= lv.m2:
            level = rank
    return level


def _measure(area: float, base: float, kind: str, rules: AlertRules, rule: str) -> Assessment:
    change = area - base
    pct = 100.0 * change / base if base > 0 else (float("inf") if change > 0 else 0.0)
    return Assessment(level_of(change, pct, rules), base, kind, change, pct, rule)


def assess(
    history: tuple[tuple[str, float], ...],
    date: str,
    area: float,
    rules: AlertRules,
    acknowledged: tuple[str, float] | None = None,
) -> Assessment:
    """Measure one observation against the baselines of `history` (see module docs)."""
    if not history or (_day(date) - _day(history[0][0])).days < rules.warmup_days:
        return Assessment(rule="warm-up")
    ack = acknowledged[1] if acknowledged and 0 <= (_day(date) - _day(acknowledged[0])).days <= 365 else None
    season = seasonal_baseline(history, date, rules.season_window_days)
    rolling = rolling_baseline(history, date, rules.rolling_days)
    if season:
        base, kind = season
    elif rolling:
        base, kind = rolling, f"rolling {rules.rolling_days} d"
    else:
        return Assessment(rule="no baseline")
    if ack and ack > base:
        base, kind = ack, "acknowledged"
    return _measure(area, base, kind, rules, "growth")


# --- The state machine ---------------------------------------------------------------------------------------------


def _trim(history: tuple[tuple[str, float], ...], date: str, keep_days: int) -> tuple[tuple[str, float], ...]:
    day = _day(date)
    return tuple(h for h in history if (day - _day(h[0])).days <= keep_days)


def step(
    *,
    prior: AlertState,
    observation: ObservationLike,
    rules: AlertRules | None = None,
    history_days: int = defaults.ALERT_HISTORY_DAYS,
) -> tuple[AlertState, list[AlertEvent]]:
    """Advance the machine by one observation. Pure and deterministic; an observation at or before the last one
    stepped (a re-run, or a late scene) changes nothing and emits nothing."""
    rules = rules or AlertRules()
    obs = observation
    key = (str(obs.date)[:10], str(obs.scene_id))
    if prior.last is not None and key <= tuple(prior.last):
        return prior, []
    area, clear = float(obs.area_m2), not bool(obs.low_confidence)
    s = replace(prior, last=key, observations=prior.observations + 1)
    if not rules.enabled:
        return _remember(s, key[0], area, clear, history_days), []
    events: list[AlertEvent] = []

    def emit(state: AlertState, event: str, a: Assessment, level: int, reason: str) -> None:
        events.append(
            AlertEvent(
                site=state.site,
                date=key[0],
                scene_id=key[1],
                event=event,
                state={"escalating": "confirmed", "escalated": "confirmed"}.get(event, event),
                level=LEVELS[level],
                area_m2=round(area, 1),
                baseline_m2=None if a.baseline_m2 is None else round(a.baseline_m2, 1),
                baseline_kind=a.baseline_kind,
                change_m2=None if a.change_m2 is None else round(a.change_m2, 1),
                change_pct=None if a.change_pct is None else round(a.change_pct, 1),
                alert_id=state.alert_id or "",
                first_date=(state.alert_id or key[0])[:10],
                low_confidence=not clear,
                reason=reason,
            )
        )

    if s.status == "none":
        a = assess(s.history, key[0], area, rules, s.acknowledged)
        if a.level:
            s = replace(
                s,
                status="provisional",
                level=a.level,
                alert_id=f"{key[0]}_{key[1]}",
                detected_m2=area,
                baseline_m2=a.baseline_m2,
                baseline_kind=a.baseline_kind,
                calm=0,
                candidate=Candidate(key[0], key[1], a.baseline_m2 or 0.0, a.level),
                episode=((key[0], area),) if clear else (),
            )
            emit(
                s,
                "provisional",
                a,
                a.level,
                f"first detection ({a.rule}): {a.change_pct:+.0f} % over the "
                f"{a.baseline_kind} baseline" + ("" if clear else "; low-confidence frame, needs confirmation"),
            )
            return s, events
        return _remember(s, key[0], area, clear, history_days), []

    # growth against the baseline of this date (the open alert's frames never feed it: it stays pre-alert, and a
    # seasonal baseline follows the season while the alert waits for confirmation)
    a = assess(s.history, key[0], area, rules, s.acknowledged)
    if a.baseline_m2 is None:
        a = _measure(area, s.baseline_m2 or 0.0, s.baseline_kind, rules, "growth")
    # renewed growth over the open alert's own robust area (a second failure): reported at once, from any frame
    ref = max(envelope([x for _, x in s.episode]) or 0.0, s.baseline_m2 or 0.0, s.detected_m2)
    renewed = _measure(area, ref, "open alert", rules, "renewed")
    if renewed.level:
        s = replace(s, detected_m2=area, calm=0)
        if s.status == "confirmed" and s.candidate is None:
            s = replace(s, candidate=Candidate(key[0], key[1], ref, max(a.level, s.level)))
        emit(
            s,
            "escalating",
            a,
            max(a.level, s.level),
            f"renewed growth: {renewed.change_pct:+.0f} % over the open "
            "alert's area" + ("" if clear else "; low-confidence frame, needs confirmation"),
        )
    if not clear:  # low-confidence: never confirms, escalates or finishes anything
        return s, events
    prev_episode = s.episode
    s = replace(s, episode=s.episode + ((key[0], area),))
    cand = s.candidate

    if s.status == "provisional":
        assert cand is not None
        votes = cand.votes + (a.level,)
        agree = sorted((v for v in votes if v), reverse=True)
        if len(agree) >= rules.confirm_count:
            level = agree[rules.confirm_count - 1]
            # growth that went on while waiting (a second failure): its higher level is an escalation to confirm
            pending = Candidate(key[0], key[1], area, a.level, by_level=True) if a.level > level else None
            s = replace(s, status="confirmed", level=level, candidate=pending, calm=0)
            emit(
                s,
                "confirmed",
                a,
                level,
                f"{len(agree)} of {len(votes)} clear observations after the first detection on {cand.date} agree",
            )
        elif len(votes) >= rules.confirm_window:
            emit(
                s,
                "reset",
                a,
                s.level,
                f"only {len(agree)} of {len(votes)} clear observations after {cand.date} agreed: not confirmed",
            )
            s = _close(s, key[0], history_days, acknowledge=False)
        else:
            s = replace(s, candidate=replace(cand, votes=votes))
        return s, events

    # confirmed: a pending escalation needs confirming like a first detection; no further growth finishes the alert
    if cand is not None and cand.date != key[0]:
        grew = (
            (a.level >= cand.level > s.level)
            if cand.by_level
            else (area >= cand.ref_m2 * (1 + rules.watch.pct / 100) and area - cand.ref_m2 >= rules.watch.m2)
        )
        votes = cand.votes + ((a.level or 1) if grew else 0,)
        agree = sorted((v for v in votes if v), reverse=True)
        if len(agree) >= rules.confirm_count:
            level = max(s.level, agree[rules.confirm_count - 1])
            s = replace(s, level=level, candidate=None, calm=0)
            emit(
                s,
                "escalated",
                a,
                level,
                f"renewed growth since {cand.date} confirmed by {len(agree)} of {len(votes)} clear observations",
            )
            return s, events
        s = replace(s, candidate=None if len(votes) >= rules.confirm_window else replace(cand, votes=votes))
    if renewed.level:
        return s, events
    calm_ref = max(envelope([x for _, x in prev_episode]) or 0.0, s.baseline_m2 or 0.0)
    s = replace(s, calm=s.calm + 1 if area <= calm_ref * (1 + rules.stable_pct / 100) else 0)
    if s.calm >= rules.finish_after and s.candidate is None:
        emit(s, "finished", a, s.level, f"no further growth in {s.calm} clear observations")
        s = _close(s, key[0], history_days, acknowledge=True)
    return s, events


def _remember(s: AlertState, date: str, area: float, clear: bool, days: int) -> AlertState:
    if not clear:
        return s
    return replace(s, history=_trim(s.history + ((date, area),), date, days))


def _close(s: AlertState, date: str, days: int, *, acknowledge: bool) -> AlertState:
    ack = s.acknowledged
    if acknowledge and s.episode:
        ack = (date, float(statistics.median(a for _, a in s.episode[-3:])))
    return replace(
        s,
        status="none",
        level=0,
        alert_id=None,
        baseline_m2=None,
        baseline_kind="",
        candidate=None,
        calm=0,
        detected_m2=0.0,
        history=_trim(s.history + s.episode, date, days),
        episode=(),
        acknowledged=ack,
    )


def replay(
    observations: Iterable[ObservationLike | dict[str, Any]],
    *,
    site: str = "",
    rules: AlertRules | None = None,
    prior: AlertState | None = None,
) -> tuple[AlertState, list[AlertEvent]]:
    """Step through a whole series (rows of series.json or observations) in date order."""
    state = prior or AlertState(site=site)
    out: list[AlertEvent] = []
    for o in observations:
        obs = AlertObservation.from_row(o) if isinstance(o, dict) else o
        state, events = step(prior=state, observation=obs, rules=rules)
        out.extend(events)
    return state, out


def detection_lags(
    observations: list[ObservationLike], events: list[AlertEvent], event_date: str, until: str | None = None
) -> tuple[int | None, int | None]:
    """For a true growth event on `event_date`: how many clear (not low-confidence) acquisitions from that date on
    it took to the first detection and to confirmation (1 = the first clear acquisition; 0 = a detection on a
    low-confidence frame before any clear one). None if not detected before `until` (the next event) / never
    confirmed. A confirmation may come from frames after the next event (they agree that the scar grew)."""

    def lag(kinds: tuple[str, ...], until: str | None) -> int | None:
        hit = next(
            (
                e
                for e in sorted(events, key=lambda e: e.date)
                if e.event in kinds and e.date >= event_date and (until is None or e.date < until)
            ),
            None,
        )
        if hit is None:
            return None
        return sum(1 for o in observations if event_date <= str(o.date)[:10] <= hit.date and not o.low_confidence)

    return lag(("provisional", "escalating", "confirmed", "escalated"), until), lag(("confirmed", "escalated"), None)
