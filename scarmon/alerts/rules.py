"""Alert rules and the confirmation state machine. Pure: numbers in, numbers out, no I/O (see scarmon.alerts.history).

One observation is one tracked frame: its date, scar area, whether it is low-confidence, how clear the scar was and,
when the series has it, the new ground outside the scar's footprint. For each new observation,
`step(prior=state, observation=obs)` returns the new state and the events it caused:

    none ─(detection, silent)─► pending ─(2 clear frames agree)─► provisional ─(evidence ≥ confirm_evidence)─► confirmed
     ▲                            │                                  │                                         │
     └──(the next clear frame contradicts: dropped, no event)────────┘ reset (not confirmed; never notified)   │
                                                                        finished ◄─(no further growth)─────────┤
                                                                        renewed growth → escalating → escalated┘

What a frame is measured against (docs/alerts.md has the operator's version):
  * log-area, so growth is relative and the noise is one number per site;
  * the site's noise σ: robust sd of the change between successive confident frames (seasonal term removed),
    blended from a prior while few are measured, never below a floor;
  * a baseline: the same season a year before when the history reaches back that far (median of the confident
    frames nearest that day within ±season_window_days, moved along the seasonal term), else the median
    deseasonalised level over rolling_days plus the seasonal term of the frame's date. The seasonal term is
    ln(1 − A·cos(2π(doy − peak)/365.25)): A is estimated from the site's successive frames and shrunk towards a
    prior while they span little of the cycle; while it is uncertain, a rolling baseline's possible error widens
    the noise a frame is scored against (season_error). An acknowledged level (where the last alert finished)
    raises the baseline for a year; re-alerting over it needs the watch threshold, not just noise. Frames of an
    open detection and of a running CUSUM never feed the baseline.

Rules that detect (each needs growth ≥ watch.m2 and ≥ min_growth_pct):
  * step: one frame ≥ detect_sigma σ over the baseline;
  * trend: a one-sided CUSUM of the residuals (capped at cap σ, slack cusum_k) reaches cusum_h: sustained small
    growth, +10-15 % on a quiet site, long before a fixed +25 %;
  * new ground: the mask outside the footprint (union of earlier masks, see scarmon.tracking.features) exceeds its
    own noise while the scar recently lost ≥ 30 % as much ground elsewhere (revegetation hiding a new zone).
The level is the highest of watch/warning/alarm whose relative AND absolute thresholds the growth reaches, at least
watch for a significant detection.

Confirmation weighs evidence: a clear agreeing frame weighs min(1, σ-score / strong_sigma), at least 0.5, times
quality_factor of the scar's clear share (1 from 98 %, 0.5 at the low-confidence limit). A detection is silent
until a second clear frame agrees (a single frame never reaches anyone, not even the history); it is confirmed when
clear frames have added confirm_evidence (a step many times the noise: the second clear frame). Low-confidence
frames can start or keep a detection but never add evidence, confirm, escalate or finish anything.
"""

from __future__ import annotations

import datetime as dt
import math
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
STATE_VERSION = 2
CUSUM_CAP = defaults.ALERT_CUSUM_CAP


class ObservationLike(Protocol):
    """What `step` reads of a frame (read-only, so frozen dataclasses fit); optional fields are read with getattr."""

    @property
    def date(self) -> str: ...
    @property
    def scene_id(self) -> str: ...
    @property
    def area_m2(self) -> float: ...
    @property
    def low_confidence(self) -> bool: ...


@dataclass(frozen=True)
class AlertObservation:
    """The part of a tracked frame the alert rules need (scarmon.tracking.features.Observation also fits)."""

    date: str
    scene_id: str
    area_m2: float
    low_confidence: bool = False
    clear_fraction: float | None = None
    low_confidence_reason: str = ""
    scar_clear_fraction: float | None = None
    new_ground_m2: float | None = None
    lost_ground_m2: float | None = None
    new_ground_azimuth_deg: float | None = None
    new_ground_distance_m: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlertObservation:
        """From a row of series.json / series.csv (CSV booleans are the strings 'True'/'False', empty = None)."""
        low = row.get("low_confidence", False)
        if isinstance(low, str):
            low = low.strip().lower() == "true"

        def num(k: str) -> float | None:
            v = row.get(k)
            return None if v in (None, "") else float(v)

        return cls(
            date=str(row["date"]),
            scene_id=str(row["scene_id"]),
            area_m2=float(row["area_m2"]),
            low_confidence=bool(low),
            clear_fraction=num("clear_fraction"),
            low_confidence_reason=str(row.get("low_confidence_reason") or ""),
            scar_clear_fraction=num("scar_clear_fraction"),
            new_ground_m2=num("new_ground_m2"),
            lost_ground_m2=num("lost_ground_m2"),
            new_ground_azimuth_deg=num("new_ground_azimuth_deg"),
            new_ground_distance_m=num("new_ground_distance_m"),
        )


@dataclass(frozen=True)
class Assessment:
    """One observation measured against a baseline and the site's noise."""

    level: int = 0  # of a detection on this frame (0: none)
    baseline_m2: float | None = None
    baseline_kind: str = ""
    change_m2: float | None = None
    change_pct: float | None = None
    rule: str = ""  # step | trend | new ground | warm-up | no baseline
    sigma: float | None = None  # the site's noise, sd of log-area
    score: float = 0.0  # (log-area − log-baseline) / sigma
    cusum: float = 0.0  # the CUSUM after this frame (if it is clear)
    agree: bool = False  # supports an open detection
    contradict: bool = False  # back within the noise: contradicts an open detection
    weight: float = 0.0  # evidence weight, were the frame clear
    ground_m2: float | None = None  # new ground over its baseline (new-ground rule)
    ground_score: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """A detection (first or renewed growth) waiting to be corroborated and confirmed."""

    date: str
    scene_id: str
    ref_m2: float
    level: int
    votes: tuple[int, ...] = ()  # level of each later clear observation (0: did not agree)
    by_level: bool = False  # agreement = reaching `level` (growth that went on while a provisional waited)
    evidence: float = 0.0  # summed weight of clear agreeing frames, the first included
    clear: int = 0  # clear agreeing frames, the first included
    frames: int = 1  # agreeing frames of any confidence, the first included
    emitted: bool = False  # provisional / escalating sent to the history
    rule: str = ""
    after_gap: int = 0  # days without a confident frame before the first detection (blind period)


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
    # version 2
    cusum: float = 0.0  # one-sided CUSUM of residuals, σ units
    cusum_since: str | None = None  # first frame of the running CUSUM (excluded from baselines)
    ground: tuple[tuple[str, float, float], ...] = ()  # confident (date, new ground, lost ground) m², all frames
    ground_acknowledged: tuple[str, float] | None = None  # (date, new ground) the last alert finished at
    last_clear: str | None = None  # date of the last confident frame
    blind_days: int = 0  # days from the last confident frame to the last frame
    noise: float | None = None  # σ of log-area at the last assessment
    amplitude: float | None = None  # seasonal amplitude of log-area at the last assessment
    note: str = ""  # how this state came to be (migration)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = STATE_VERSION
        d["level_name"] = LEVELS[self.level]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertState:
        """Loads this version and version 1 (which had no CUSUM, ground or evidence: they start empty, and a
        pending candidate's agreeing votes count as full-strength evidence, as version 1 counted them)."""
        version = int(d.get("version", 1))
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cand = d.get("candidate")
        if cand:
            c = {k: v for k, v in cand.items() if k in Candidate.__dataclass_fields__}
            c["votes"] = tuple(int(v) for v in c.get("votes", ()))
            if version < 2:
                agreeing = sum(1 for v in c["votes"] if v)
                c.update(evidence=float(agreeing), clear=agreeing, frames=1 + agreeing, emitted=True)
            d["candidate"] = Candidate(**c)
        for k in ("history", "episode"):
            d[k] = tuple((str(a), float(b)) for a, b in d.get(k, ()))
        d["ground"] = tuple((str(a), float(b), float(c)) for a, b, c in d.get("ground", ()))
        for k in ("acknowledged", "last", "ground_acknowledged"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        if version < 2:
            last_clear = max((h[0] for h in d.get("history", ()) + d.get("episode", ())), default=None)
            d.update(
                last_clear=last_clear,
                note=f"migrated from state version {version}: CUSUM and new-ground history start empty",
            )
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


# --- Seasonality, noise, baselines ----------------------------------------------------------------------------------


def _day(s: str) -> dt.date:
    return dt.date.fromisoformat(s[:10])


def _unit_season(date: str, peak_doy: int) -> float:
    """The seasonal shape, −cos(2π(doy − peak)/365.25): −1 at peak green (smallest NDVI scar), +1 half a year later."""
    return -math.cos(2 * math.pi * (_day(date).timetuple().tm_yday - peak_doy) / 365.25)


def seasonal_term(date: str, amplitude: float, peak_doy: int) -> float:
    """Expected seasonal deviation of log-area on `date`: ln(1 + A·shape), the area swinging by ±A around its
    level (regrowth covers and uncovers a share of the scar)."""
    return math.log1p(amplitude * _unit_season(date, peak_doy))


def _pairs(history: Iterable[tuple[str, float]], max_gap_days: int) -> list[tuple[str, float, str, float]]:
    h = sorted(history)
    return [
        (d0, a0, d1, a1)
        for (d0, a0), (d1, a1) in zip(h, h[1:], strict=False)
        if 0 < (_day(d1) - _day(d0)).days <= max_gap_days and a0 > 0 and a1 > 0
    ]


def _robust_sd(values: list[float]) -> float:
    med = statistics.median(values)
    return 1.4826 * float(statistics.median(abs(v - med) for v in values))


def seasonal_amplitude(
    history: Iterable[tuple[str, float]],
    *,
    peak_doy: int,
    prior: float,
    prior_weight: float,
    max_amplitude: float,
    max_gap_days: int = 60,
) -> float:
    """Seasonal amplitude A from successive confident frames: the A in [0, max_amplitude] (steps of 0.01) whose
    seasonal term best explains their log-area changes under a Cauchy loss (scale 3 robust sd, at least 6 %: a
    failure or an odd frame is an outlier, not a season), plus prior_weight·(A − prior)²: the prior rules while the
    frames span little of the cycle.
    Fitting changes (of the 3-frame running median) rather than levels keeps steps and slow trends from posing as
    seasonality."""
    h = sorted(history)
    # a 3-frame running median first: an odd single frame next to a long cloudy gap would pose as a season
    smooth = [
        (d, float(statistics.median(a for _, a in h[i - 1 : i + 2])) if 0 < i < len(h) - 1 else a)
        for i, (d, a) in enumerate(h)
    ]
    pairs = _pairs(smooth, max_gap_days)
    us = [(_unit_season(d0, peak_doy), _unit_season(d1, peak_doy), math.log(a1 / a0)) for d0, a0, d1, a1 in pairs]
    if not us:
        return min(prior, max_amplitude)

    def residuals(amp: float) -> list[float]:
        return [y - math.log1p(amp * u1) + math.log1p(amp * u0) for u0, u1, y in us]

    c2 = (3 * max(_robust_sd(residuals(prior)), 0.02)) ** 2
    best, best_loss = prior, float("inf")
    for i in range(int(round(max_amplitude * 100)) + 1):
        amp = i / 100
        loss = sum(c2 * math.log1p(r * r / c2) for r in residuals(amp)) + prior_weight * (amp - prior) ** 2
        if loss < best_loss:
            best, best_loss = amp, loss
    return best


def season_error(
    history: Iterable[tuple[str, float]], date: str, rules: AlertRules, amplitude: float, sigma: float
) -> float:
    """How far off a rolling baseline on `date` may be because the seasonal amplitude is not known yet: the
    amplitude's posterior sd (prior sd ALERT_SEASON_AMPLITUDE_SD; frames of noise `sigma` inform it in proportion to
    the spread of their seasons, as in a regression of level on season) times how far the date's season lies from
    the history's mean season. Large in a site's first months when the season being judged has not been seen (the
    first autumn of a site monitored since summer); small once the frames span the swing."""
    peak = rules.season_peak_doy

    def slope(d: str) -> float:  # d seasonal_term / d amplitude
        u = _unit_season(d, peak)
        return u / (1 + amplitude * u)

    day = _day(date)
    # the frames inform the amplitude through the spread of their seasons (a history within one season says little)
    s = [slope(d) for d, _ in history if 0 < (day - _day(d)).days <= rules.rolling_days]
    sxx = sum((x - statistics.fmean(s)) ** 2 for x in s) if s else 0.0
    var = 1.0 / (sxx / (sigma * sigma) + 1.0 / defaults.ALERT_SEASON_AMPLITUDE_SD**2)
    if not s:
        return 0.0
    return math.sqrt(var) * abs(slope(date) - statistics.fmean(s))


def noise_sigma(
    history: Iterable[tuple[str, float]],
    *,
    amplitude: float,
    peak_doy: int,
    prior: float,
    floor: float,
    min_pairs: int,
    max_gap_days: int = 60,
) -> float:
    """The site's noise: robust sd (1.4826 MAD / √2) of the change of deseasonalised log-area between successive
    confident frames, blended with `prior` while fewer than `min_pairs` pairs are measured, never below `floor`."""
    diffs = [
        math.log(a1 / a0) - seasonal_term(d1, amplitude, peak_doy) + seasonal_term(d0, amplitude, peak_doy)
        for d0, a0, d1, a1 in _pairs(history, max_gap_days)
    ]
    if not diffs:
        return max(prior, floor)
    sd = _robust_sd(diffs) / math.sqrt(2)
    n = len(diffs)
    if n < min_pairs:
        sd = math.sqrt((n * sd * sd + (min_pairs - n) * prior * prior) / min_pairs)
    return max(sd, floor)


def seasonal_baseline(
    history: Iterable[tuple[str, float]],
    date: str,
    window_days: int,
    *,
    amplitude: float = 0.0,
    peak_doy: int = defaults.ALERT_SEASON_PEAK_DOY,
    nearest: int = 5,
) -> tuple[float, str] | None:
    """Area expected on `date` from the same season of the most recent earlier year with frames within
    ±window_days of it: the median of its `nearest` frames to that day, each moved along the seasonal term to the
    target's day of year (so a steep seasonal slope with frames on one side of the day does not bias it)."""
    day = _day(date)
    hist = list(history)
    for years in range(1, 4):
        target = day - dt.timedelta(days=round(365.25 * years))
        near = sorted(
            (abs((_day(d) - target).days), d, a)
            for d, a in hist
            if abs((_day(d) - target).days) <= window_days and _day(d) < day and a > 0
        )[:nearest]
        if near:
            shift = seasonal_term(target.isoformat(), amplitude, peak_doy)
            logs = [math.log(a) - seasonal_term(d, amplitude, peak_doy) + shift for _, d, a in near]
            return math.exp(statistics.median(logs)), f"same season {target.year}"
    return None


def envelope(values: list[float]) -> float | None:
    """Max of the 3-point running median; the newest value only counts as far as its predecessor supports it, so a
    single spike at the end (not yet known as one) does not lift the envelope."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    smooth = [float(statistics.median(values[max(0, i - 1) : i + 2])) for i in range(len(values))]
    smooth[0] = min(values[0], values[1])
    smooth[-1] = min(values[-1], values[-2])
    return max(smooth)


def level_of(change_m2: float, change_pct: float, rules: AlertRules) -> int:
    """Highest level whose relative AND absolute thresholds the growth reaches; 0 if none."""
    level = 0
    for rank, lv in enumerate((rules.watch, rules.warning, rules.alarm), start=1):
        if change_pct >= lv.pct and change_m2 >= lv.m2:
            level = rank
    return level


def baseline(
    history: tuple[tuple[str, float], ...],
    date: str,
    rules: AlertRules,
    amplitude: float,
    acknowledged: tuple[str, float] | None = None,
) -> tuple[float, str] | None:
    """Log-area the frame of `date` is expected to have, and what kind of baseline gave it (see module docs)."""
    day = _day(date)
    hist = [(d, a) for d, a in history if _day(d) < day and a > 0]
    if not hist:
        return None
    found: tuple[float, str] | None = None
    if (day - _day(hist[0][0])).days >= 365 - rules.season_window_days:
        season = seasonal_baseline(
            hist, date, rules.season_window_days, amplitude=amplitude, peak_doy=rules.season_peak_doy
        )
        if season and season[0] > 0:
            found = math.log(season[0]), season[1]
    if found is None:
        peak = rules.season_peak_doy
        zs = [
            math.log(a) - seasonal_term(d, amplitude, peak)
            for d, a in hist
            if (day - _day(d)).days <= rules.rolling_days
        ]
        if not zs:
            return None
        kind = f"rolling {rules.rolling_days} d" + (f", season ±{100 * amplitude:.0f} %" if amplitude >= 0.005 else "")
        found = statistics.median(zs) + seasonal_term(date, amplitude, peak), kind
    if acknowledged and 0 <= (day - _day(acknowledged[0])).days <= 365 and acknowledged[1] > 0:
        ack = (
            math.log(acknowledged[1])
            - seasonal_term(acknowledged[0], amplitude, rules.season_peak_doy)
            + seasonal_term(date, amplitude, rules.season_peak_doy)
        )
        if ack > found[0]:
            found = ack, "acknowledged"
    return found


def usable(obs: ObservationLike) -> bool:
    """Whether a frame counts as clear evidence: not low-confidence, or low-confidence only because clouds elsewhere
    in the AOI lowered its clear fraction while the scar and its surroundings were clear (scar_clear_fraction at
    least ALERT_CLEAN_QUALITY): the scar was seen cleanly. A cloud, shadow or snow on the scar, a jump undone by
    the next frame or a tracker's note keep it low-confidence."""
    if not obs.low_confidence:
        return True
    scar = getattr(obs, "scar_clear_fraction", None)
    reasons = [r.strip() for r in str(getattr(obs, "low_confidence_reason", "") or "").split(";") if r.strip()]
    return (
        scar is not None
        and float(scar) >= defaults.ALERT_CLEAN_QUALITY
        and bool(reasons)
        and all(r.startswith("clear fraction ") for r in reasons)
    )


def _quality(obs: ObservationLike) -> float:
    for k in ("scar_clear_fraction", "clear_fraction"):
        v = getattr(obs, k, None)
        if v is not None:
            return float(v)
    return 1.0


def _quiet(values: list[float]) -> float:
    """The lowest 3-frame running median of a series (0 if empty): its quiet level, ignoring single odd frames."""
    smooth = [
        float(statistics.median(values[i - 1 : i + 2])) if 0 < i < len(values) - 1 else v for i, v in enumerate(values)
    ]
    return min(smooth) if smooth else 0.0


def _ground_baseline(
    ground: tuple[tuple[str, float, float], ...],
    date: str,
    acknowledged: tuple[str, float] | None,
    area_m2: float,
    rules: AlertRules,
) -> tuple[float, float]:
    """New ground a frame of `date` is expected to show and its noise. Expected: the quiet level, the lowest
    3-frame running median of the last 120 days (new ground is ~0 on a quiet scar; the lowest level is not dragged up
    by a zone opening gradually, and forgets an acknowledged failure as soon as the footprint has caught up with it),
    or the acknowledged new ground while the footprint has not caught up with it yet. Noise: robust sd of successive
    differences / √2, at least noise_floor × area (noise_prior × area while fewer than min_frames are known)."""
    day = _day(date)
    recent = [g for d, g, _ in sorted(ground) if 0 < (day - _day(d)).days <= 120]
    base = _quiet(recent)
    lag = min(defaults.ALERT_GROUND_LAGS_DAYS)
    if acknowledged and 0 <= (day - _day(acknowledged[0])).days <= lag:
        base = max(base, acknowledged[1])
    floor = (rules.noise_prior if len(recent) < rules.min_frames else rules.noise_floor) * area_m2
    diffs = [b - a for a, b in zip(recent, recent[1:], strict=False)]
    spread = _robust_sd(diffs) / math.sqrt(2) if len(diffs) >= 2 else 0.0
    return base, max(spread, floor)


def assess(
    history: tuple[tuple[str, float], ...],
    date: str,
    area: float,
    rules: AlertRules,
    acknowledged: tuple[str, float] | None = None,
    *,
    observation: ObservationLike | None = None,
    cusum: float = 0.0,
    cusum_since: str | None = None,
    ground: tuple[tuple[str, float, float], ...] = (),
    ground_acknowledged: tuple[str, float] | None = None,
) -> Assessment:
    """Measure one observation against the baselines of `history` and the site's noise (see module docs).
    Frames from `cusum_since` on (a running CUSUM) do not feed the baseline."""
    day = _day(date)
    hist = tuple(h for h in history if _day(h[0]) < day)
    if len(hist) < rules.min_frames or (day - _day(hist[0][0])).days < rules.warmup_days:
        return Assessment(rule="warm-up")
    peak = rules.season_peak_doy
    amp = (
        rules.season_amplitude
        if rules.season_amplitude is not None
        else seasonal_amplitude(
            hist,
            peak_doy=peak,
            prior=defaults.ALERT_SEASON_AMPLITUDE,
            prior_weight=defaults.ALERT_SEASON_PRIOR_WEIGHT,
            max_amplitude=defaults.ALERT_SEASON_AMPLITUDE_MAX,
        )
    )
    sigma = noise_sigma(
        hist,
        amplitude=amp,
        peak_doy=peak,
        prior=rules.noise_prior,
        floor=rules.noise_floor,
        min_pairs=defaults.ALERT_NOISE_FRAMES,
    )
    # frames of a running CUSUM are suspected growth: they do not feed the baseline (they do teach the season: a
    # season learnt without them locks a misfit in, which the CUSUM then keeps finding)
    base_hist = tuple(h for h in hist if cusum_since is None or h[0] < cusum_since)
    if len(base_hist) < rules.min_frames:
        base_hist = hist
    found = baseline(base_hist, date, rules, amp, acknowledged)
    if found is None or area <= 0:
        return Assessment(rule="no baseline", sigma=sigma)
    y_base, kind = found
    base = math.exp(y_base)
    change, pct = area - base, 100.0 * (area / base - 1)
    spread = sigma
    if kind.startswith("rolling") and rules.season_amplitude is None:
        spread = math.hypot(sigma, season_error(base_hist, date, rules, amp, sigma))
    score = (math.log(area) - y_base) / spread
    new_cusum = max(0.0, cusum + min(score, CUSUM_CAP) - rules.cusum_k)
    min_pct = rules.watch.pct if kind == "acknowledged" else rules.min_growth_pct
    sized = change >= rules.watch.m2 and pct >= min_pct
    step_hit = sized and score >= rules.detect_sigma
    trend_hit = sized and new_cusum >= rules.cusum_h and score >= rules.agree_sigma
    agree = change >= rules.watch.m2 / 2 and pct >= min_pct / 2 and score >= rules.agree_sigma
    level, rule = (
        (max(1, level_of(change, pct, rules)), "step" if step_hit else "trend") if step_hit or trend_hit else (0, "")
    )
    strength = score

    g_change: float | None = None
    g_score = 0.0
    new_g = getattr(observation, "new_ground_m2", None) if observation is not None else None
    lost_g = getattr(observation, "lost_ground_m2", None) if observation is not None else None
    if rules.new_ground and new_g is not None:
        g_base, g_sigma = _ground_baseline(ground, date, ground_acknowledged, base, rules)
        g_change = float(new_g) - g_base
        g_score = g_change / g_sigma
        # hidden: ground lost recently (over its quiet level of the last 120 days) offsets the new ground in the
        # total; ground lost long ago (still in last year's footprint) hides nothing new
        day = _day(date)
        lost_base = _quiet([x for d, _, x in sorted(ground) if 0 < (day - _day(d)).days <= 120])
        hidden = lost_g is not None and float(lost_g) - lost_base >= defaults.ALERT_GROUND_HIDDEN * g_change
        g_pct = 100.0 * g_change / base
        g_sized = g_change >= rules.watch.m2 and g_pct >= rules.min_growth_pct
        if hidden and g_sized and g_score >= rules.detect_sigma:
            g_level = max(1, level_of(g_change, g_pct, rules))
            if g_level > level:
                level, rule = g_level, "new ground"
        if hidden and g_change >= rules.watch.m2 / 2 and g_score >= rules.agree_sigma:
            agree = True
            strength = max(strength, g_score)
    contradict = not agree and score < 1.0
    weight = max(0.5, min(1.0, strength / rules.strong_sigma)) if agree or level else 0.0
    if observation is not None:
        weight *= quality_factor(_quality(observation))
    return Assessment(
        level=level,
        baseline_m2=base,
        baseline_kind=kind,
        change_m2=change,
        change_pct=pct,
        rule=rule,
        sigma=sigma,
        score=score,
        cusum=new_cusum,
        agree=agree or bool(level),
        contradict=contradict,
        weight=weight,
        ground_m2=g_change,
        ground_score=g_score,
    )


def _measure(area: float, base: float, kind: str, rules: AlertRules, rule: str, sigma: float) -> Assessment:
    change = area - base
    pct = 100.0 * change / base if base > 0 else (float("inf") if change > 0 else 0.0)
    score = math.log(area / base) / sigma if area > 0 and base > 0 else 0.0
    return Assessment(level_of(change, pct, rules), base, kind, change, pct, rule, sigma, score)


# --- The state machine ---------------------------------------------------------------------------------------------


def _trim(history: tuple[Any, ...], date: str, keep_days: int) -> tuple[Any, ...]:
    day = _day(date)
    return tuple(h for h in history if (day - _day(h[0])).days <= keep_days)


def _ground_row(obs: ObservationLike, date: str) -> tuple[str, float, float] | None:
    g = getattr(obs, "new_ground_m2", None)
    if g is None:
        return None
    lost = getattr(obs, "lost_ground_m2", None)
    return date, float(g), float(lost or 0.0)


def _where(obs: ObservationLike) -> dict[str, Any]:
    """Where the new ground lies, for the alert's extra fields."""
    out: dict[str, Any] = {}
    for k in ("new_ground_m2", "lost_ground_m2", "new_ground_azimuth_deg", "new_ground_distance_m"):
        v = getattr(obs, k, None)
        if v is not None:
            out[k] = round(float(v), 1)
    return out


def _where_text(obs: ObservationLike) -> str:
    g, az, dist = (getattr(obs, k, None) for k in ("new_ground_m2", "new_ground_azimuth_deg", "new_ground_distance_m"))
    if g is None or az is None or g <= 0:
        return ""
    compass = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")[round(float(az) / 45) % 8]
    return f"; new ground {float(g):,.0f} m² towards {compass} ({float(az):.0f}°)" + (
        f", {float(dist):,.0f} m from the footprint's centre" if dist is not None else ""
    )


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
    area, clear = float(obs.area_m2), usable(obs)
    blind = (_day(key[0]) - _day(prior.last_clear)).days if prior.last_clear else 0
    s = replace(
        prior,
        last=key,
        observations=prior.observations + 1,
        last_clear=key[0] if clear else prior.last_clear,
        blind_days=0 if clear else blind,
    )
    g_row = _ground_row(obs, key[0]) if clear else None
    if not rules.enabled:
        return _remember(s, key[0], area, clear, g_row, history_days), []
    events: list[AlertEvent] = []
    a = assess(
        s.history,
        key[0],
        area,
        rules,
        s.acknowledged,
        observation=obs,
        cusum=s.cusum,
        cusum_since=s.cusum_since,
        ground=s.ground,
        ground_acknowledged=s.ground_acknowledged,
    )
    s = replace(s, noise=a.sigma if a.sigma is not None else s.noise)
    gap_now = blind if blind >= rules.stale_days else 0

    def emit(state: AlertState, event: str, m: Assessment, level: int, reason: str) -> None:
        extra: dict[str, Any] = {"rule": m.rule or (state.candidate.rule if state.candidate else ""), **_where(obs)}
        if m.sigma is not None:
            extra.update(noise_pct=round(100 * m.sigma, 2), score_sigma=round(m.score, 1))
        if state.candidate is not None:
            extra["evidence"] = round(state.candidate.evidence, 2)
        gap = gap_now or (
            state.candidate.after_gap if state.candidate and event in ("provisional", "escalating") else 0
        )
        after_gap = ""
        if gap:
            extra["blind_days"] = gap
            after_gap = (
                f"; first seen after {gap} days without a confident frame, measured against the level before the gap"
            )
        events.append(
            AlertEvent(
                site=state.site,
                date=key[0],
                scene_id=key[1],
                event=event,
                state={"escalating": "confirmed", "escalated": "confirmed"}.get(event, event),
                level=LEVELS[level],
                area_m2=round(area, 1),
                baseline_m2=None if m.baseline_m2 is None else round(m.baseline_m2, 1),
                baseline_kind=m.baseline_kind,
                change_m2=None if m.change_m2 is None else round(m.change_m2, 1),
                change_pct=None if m.change_pct is None else round(m.change_pct, 1),
                alert_id=state.alert_id or "",
                first_date=(state.alert_id or key[0])[:10],
                low_confidence=not clear,
                reason=reason + after_gap + _where_text(obs),
                extra=extra,
            )
        )

    if s.status == "none":
        return _idle(s, a, obs, key, area, clear, g_row, rules, history_days, emit, blind), events
    return _open(s, a, obs, key, area, clear, g_row, rules, history_days, emit), events


class _Emit(Protocol):
    def __call__(self, state: AlertState, event: str, m: Assessment, level: int, reason: str) -> None: ...


def _describe(a: Assessment) -> str:
    what = {"step": "growth", "trend": "sustained growth (CUSUM)", "new ground": "new ground outside the footprint"}
    size = (
        f"{a.ground_m2:+,.0f} m² ({a.ground_score:.0f} noise sd)"
        if a.rule == "new ground" and a.ground_m2 is not None
        else f"{a.change_pct:+.0f} % ({a.score:.1f} noise sd)"
    )
    return f"{what.get(a.rule, 'growth')} {size} over the {a.baseline_kind} baseline"


def _idle(
    s: AlertState,
    a: Assessment,
    obs: ObservationLike,
    key: tuple[str, str],
    area: float,
    clear: bool,
    g_row: tuple[str, float, float] | None,
    rules: AlertRules,
    days: int,
    emit: _Emit,
    blind: int = 0,
) -> AlertState:
    """No open alert: update the CUSUM, start a silent candidate on a detection, open the alert once a second
    frame agrees, drop the candidate when the next clear frame contradicts it."""
    if clear and a.sigma is not None and a.baseline_m2 is not None:
        since = s.cusum_since if s.cusum > 0 else key[0]
        s = replace(s, cusum=a.cusum, cusum_since=since if a.cusum > 0 else None)
    cand = s.candidate
    if cand is None:
        if not a.level:
            return _remember(s, key[0], area, clear, g_row, days)
        cand = Candidate(
            key[0],
            key[1],
            a.baseline_m2 or 0.0,
            a.level,
            evidence=a.weight if clear else 0.0,
            clear=int(clear),
            frames=1,
            rule=a.rule,
            after_gap=blind if blind >= rules.stale_days else 0,
        )
        return replace(
            s,
            candidate=cand,
            baseline_m2=a.baseline_m2,
            baseline_kind=a.baseline_kind,
            episode=((key[0], area),) if clear else (),
            detected_m2=area,
        )
    episode = s.episode + (((key[0], area),) if clear else ())
    if a.agree:
        cand = replace(
            cand,
            evidence=cand.evidence + (a.weight if clear else 0.0),
            clear=cand.clear + int(clear),
            frames=cand.frames + 1,
            level=max(cand.level, a.level),
            votes=cand.votes + ((max(a.level, 1),) if clear else ()),
        )
        s = replace(s, candidate=cand, episode=episode, detected_m2=max(s.detected_m2, area))
        if cand.clear >= 2:
            s = replace(
                s,
                status="provisional",
                level=cand.level,
                alert_id=f"{cand.date}_{cand.scene_id}",
                calm=0,
                cusum=0.0,
                cusum_since=None,
                candidate=replace(cand, emitted=True),
            )
            emit(
                s,
                "provisional",
                a,
                cand.level,
                f"{_describe(a)}; first seen on {cand.date}, corroborated by {cand.clear} clear frames",
            )
            return _maybe_confirm(s, a, key, rules, emit)
        return s
    if not clear:
        return s
    cand = replace(cand, votes=cand.votes + (0,))
    if a.contradict or len(cand.votes) >= rules.confirm_window:
        # contradicted before anyone heard of it: dropped silently, its frames return to the history
        return _close(replace(s, episode=episode, candidate=None), key[0], days, acknowledge=False, g_row=g_row)
    return replace(s, candidate=cand, episode=episode)


def _maybe_confirm(s: AlertState, a: Assessment, key: tuple[str, str], rules: AlertRules, emit: _Emit) -> AlertState:
    cand = s.candidate
    assert cand is not None
    if cand.evidence + 1e-9 >= rules.confirm_evidence and cand.clear >= rules.confirm_count:
        s = replace(s, status="confirmed", level=cand.level, calm=0)
        emit(
            s,
            "confirmed",
            a,
            cand.level,
            f"{_describe(a)}; evidence {cand.evidence:.1f} from {cand.clear} clear "
            f"frames since the first detection on {cand.date}",
        )
        s = replace(s, candidate=None)
    return s


def _open(
    s: AlertState,
    a: Assessment,
    obs: ObservationLike,
    key: tuple[str, str],
    area: float,
    clear: bool,
    g_row: tuple[str, float, float] | None,
    rules: AlertRules,
    days: int,
    emit: _Emit,
) -> AlertState:
    """An open alert (provisional or confirmed): confirm or reset it, watch for renewed growth, finish it."""
    if a.baseline_m2 is None:
        a = _measure(area, s.baseline_m2 or 0.0, s.baseline_kind, rules, "growth", s.noise or rules.noise_prior)
    sigma = a.sigma or s.noise or rules.noise_prior
    # renewed growth over the open alert's own robust area (a second failure)
    ref = max(envelope([x for _, x in s.episode]) or 0.0, s.baseline_m2 or 0.0, s.detected_m2)
    renewed = _measure(area, ref, "open alert", rules, "renewed", sigma)
    renewing = bool(renewed.level) and renewed.score >= rules.detect_sigma
    prev_episode = s.episode
    if clear:
        s = replace(
            s, episode=s.episode + ((key[0], area),), ground=_trim(s.ground + ((g_row,) if g_row else ()), key[0], days)
        )
    cand = s.candidate

    if s.status == "provisional":
        assert cand is not None
        agree = a.agree
        if not clear:
            return replace(s, detected_m2=max(s.detected_m2, area)) if agree else s
        level = max(cand.level, a.level) if agree else cand.level
        cand = replace(
            cand,
            votes=cand.votes + ((max(a.level, 1) if agree else 0),),
            level=level,
            evidence=cand.evidence + (a.weight if agree else 0.0),
            clear=cand.clear + int(agree),
        )
        s = replace(s, candidate=cand, level=level, detected_m2=max(s.detected_m2, area) if agree else s.detected_m2)
        before = s.status
        s = _maybe_confirm(s, a, key, rules, emit)
        if s.status != before:
            return s
        disagree = sum(1 for v in cand.votes if not v)
        if disagree >= rules.confirm_count or len(cand.votes) >= rules.confirm_window:
            emit(
                s,
                "reset",
                a,
                s.level,
                f"only {cand.clear} of {len(cand.votes) + 1} clear frames since the first "
                f"detection on {cand.date} agreed (evidence {cand.evidence:.1f} < {rules.confirm_evidence:g}): "
                "not confirmed",
            )
            return _close(s, key[0], days, acknowledge=False)
        return s

    # confirmed: renewed growth is a candidate of its own: silent until corroborated, then escalating → escalated
    if renewing and cand is None:
        cand = Candidate(
            key[0],
            key[1],
            ref,
            max(a.level, s.level),
            evidence=renewed_weight(renewed, rules, obs) if clear else 0.0,
            clear=int(clear),
            frames=1,
            rule="renewed",
        )
        return replace(s, candidate=cand, calm=0, detected_m2=max(s.detected_m2, area))
    if cand is not None and cand.date != key[0]:
        grew = (
            (a.level >= cand.level > s.level)
            if cand.by_level
            else (area >= cand.ref_m2 * (1 + rules.watch.pct / 200) and area - cand.ref_m2 >= rules.watch.m2 / 2)
        )
        if grew or renewing:
            ev = renewed_weight(_measure(area, cand.ref_m2, "open alert", rules, "renewed", sigma), rules, obs)
            cand = replace(
                cand,
                evidence=cand.evidence + (ev if clear else 0.0),
                clear=cand.clear + int(clear),
                frames=cand.frames + 1,
                votes=cand.votes + ((max(a.level, 1),) if clear else ()),
            )
            s = replace(s, candidate=cand, calm=0, detected_m2=max(s.detected_m2, area))
            level = max(s.level, a.level, cand.level if not cand.by_level else a.level)
            if not cand.emitted and cand.clear >= 1 and cand.frames >= 2:
                cand = replace(cand, emitted=True)
                s = replace(s, candidate=cand)
                emit(
                    s,
                    "escalating",
                    a,
                    level,
                    f"renewed growth: {renewed.change_pct:+.0f} % over the open alert's "
                    f"area since {cand.date}" + ("" if clear else " (this frame low-confidence)"),
                )
            if cand.emitted and cand.evidence + 1e-9 >= rules.confirm_evidence and cand.clear >= rules.confirm_count:
                s = replace(s, level=max(s.level, min(level, 3)), candidate=None, calm=0)
                emit(
                    s,
                    "escalated",
                    a,
                    s.level,
                    f"renewed growth since {cand.date} confirmed: evidence "
                    f"{cand.evidence:.1f} from {cand.clear} clear frames",
                )
            return s
        if not clear:
            return s
        cand = replace(cand, votes=cand.votes + (0,))
        contradicted = renewed.score < 1.0 or len(cand.votes) >= rules.confirm_window
        s = replace(s, candidate=None if contradicted else cand)
    if not clear or renewing:
        return s
    calm_ref = max(envelope([x for _, x in prev_episode]) or 0.0, s.baseline_m2 or 0.0)
    s = replace(s, calm=s.calm + 1 if area <= calm_ref * (1 + rules.stable_pct / 100) else 0)
    if s.calm >= rules.finish_after and s.candidate is None:
        emit(s, "finished", a, s.level, f"no further growth in {s.calm} clear observations")
        s = _close(s, key[0], days, acknowledge=True)
    return s


def renewed_weight(m: Assessment, rules: AlertRules, obs: ObservationLike) -> float:
    """Evidence weight of a frame for renewed growth: like a first detection's, from its σ-score over the open
    alert's area."""
    return max(0.5, min(1.0, m.score / rules.strong_sigma)) * quality_factor(_quality(obs))


def quality_factor(clear: float) -> float:
    """How much of a frame's evidence counts, from the clear share of the scar: all of it from ALERT_CLEAN_QUALITY
    up, half of it at the low-confidence limit, linear in between (a partly clouded frame weighs less)."""
    lo, hi = defaults.LOW_CONFIDENCE_CLEAR, defaults.ALERT_CLEAN_QUALITY
    return min(1.0, max(0.5, 0.5 + 0.5 * (clear - lo) / (hi - lo)))


def _remember(
    s: AlertState, date: str, area: float, clear: bool, g_row: tuple[str, float, float] | None, days: int
) -> AlertState:
    if not clear:
        return s
    return replace(
        s,
        history=_trim(s.history + ((date, area),), date, days),
        ground=_trim(s.ground + ((g_row,) if g_row else ()), date, days),
    )


def _close(
    s: AlertState, date: str, days: int, *, acknowledge: bool, g_row: tuple[str, float, float] | None = None
) -> AlertState:
    ack, g_ack = s.acknowledged, s.ground_acknowledged
    if acknowledge and s.episode:
        ack = (date, float(statistics.median(a for _, a in s.episode[-3:])))
        recent = [g for d, g, _ in s.ground if d >= s.episode[max(0, len(s.episode) - 3)][0]]
        if recent:
            g_ack = (date, float(statistics.median(recent)))
    ground = _trim(s.ground + ((g_row,) if g_row else ()), date, days)
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
        history=_trim(tuple(sorted(set(s.history + s.episode))), date, days),
        episode=(),
        acknowledged=ack,
        ground_acknowledged=g_ack,
        ground=ground,
        cusum=0.0,
        cusum_since=None,
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


def site_status(state: AlertState, as_of: str, rules: AlertRules | None = None) -> dict[str, Any]:
    """What an operator should read about a site now: its alert state and level, and whether it is blind (no
    confident frame for stale_days: monsoon, snow), with the days since its last confident frame."""
    rules = rules or AlertRules()
    since = (_day(as_of) - _day(state.last_clear)).days if state.last_clear else None
    stale = since is None or since >= rules.stale_days
    return {
        "status": state.status,
        "level": LEVELS[state.level],
        "last_clear": state.last_clear,
        "days_since_clear": since,
        "stale": stale,
        "note": (
            f"blind: no confident frame for {since} days; growth in the meantime is only seen at the next clear frame"
            if stale and since is not None
            else "no confident frame yet"
            if stale
            else ""
        ),
        "noise_pct": None if state.noise is None else round(100 * state.noise, 2),
        "pending": None
        if state.candidate is None or state.status != "none"
        else {
            "first_date": state.candidate.date,
            "level": LEVELS[state.candidate.level],
            "note": "growth seen on one frame, waiting for a second to agree (not notified)",
        },
    }


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
