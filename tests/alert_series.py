"""Area series shaped like the paper's sites, for alert tests (no imagery: the alert rules only see numbers)."""

from __future__ import annotations

import datetime as dt
import math
import random

from scarmon.alerts.rules import AlertObservation


def series(
    area,
    *,
    start="2020-01-03",
    end="2023-01-01",
    seed=0,
    seasonal=0.10,
    p_cloud=0.5,
    dips=(),
    spikes=(),
    dip_flagged=True,
    noise=0.01,
):
    """Clear acquisitions every 5 days minus cloudy ones (p_cloud), area(day) × a seasonal swing (summer regrowth
    shrinks the NDVI scar) × noise; `dips`/`spikes`: (date, factor) one-frame cloud-shadow errors, flagged
    low-confidence when `dip_flagged`. Frames with clear fraction < 0.9 are flagged low-confidence like the tracker does."""
    rng = random.Random(seed)
    d, end_d = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    d0 = d
    odd = {d0 + dt.timedelta(days=5 * round((dt.date.fromisoformat(k) - d0).days / 5)): f for k, f in (*dips, *spikes)}
    out = []
    while d <= end_d:
        forced = d in odd
        if forced or rng.random() > p_cloud:
            season = 1 - seasonal * math.cos(2 * math.pi * (d.timetuple().tm_yday - 200) / 365.25)
            a = area(d) * season * (1 + rng.gauss(0, noise))
            clear = 1.0 if forced else rng.choice([1.0, 1.0, 1.0, 0.95, 0.85])
            low = clear < 0.9
            if forced:
                a *= odd[d]
                low = dip_flagged
            out.append(AlertObservation(d.isoformat(), f"S2_{d:%Y%m%d}", a, low_confidence=low, clear_fraction=clear))
        d += dt.timedelta(days=5)
    return out


def ramp(points):
    """Piecewise-linear factor through (ISO date, value) keyframes; constant outside."""
    pts = [(dt.date.fromisoformat(k), v) for k, v in points]

    def f(d):
        if d <= pts[0][0]:
            return pts[0][1]
        for (d0, v0), (d1, v1) in zip(pts, pts[1:], strict=False):
            if d <= d1:
                return v0 + (v1 - v0) * (d - d0).days / max(1, (d1 - d0).days)
        return pts[-1][1]

    return f


BAIGE_EVENTS = ("2021-10-11", "2021-11-03")
"""Two failures three weeks apart (Baige: 2018-10-11 and 2018-11-03), after +53 % of creep in the year before."""


def baige(seed=0, **kw):
    g = ramp(
        [
            ("2020-10-01", 1.0),
            ("2021-10-01", 1.53),
            ("2021-10-10", 1.53),
            ("2021-10-11", 2.5),
            ("2021-11-02", 2.5),
            ("2021-11-03", 4.0),
        ]
    )
    return series(lambda d: 150_000 * g(d), seed=seed, **kw)


SELA_EVENT = "2021-07-19"
"""A flood triggers +330 % within six weeks, then the scar contracts as its margins revegetate (Sela)."""


def sela(seed=0, **kw):
    g = ramp(
        [
            ("2021-07-18", 1.0),
            ("2021-07-19", 1.7),
            ("2021-08-01", 2.8),
            ("2021-08-15", 3.8),
            ("2021-08-30", 4.3),
            ("2022-06-01", 3.6),
        ]
    )
    return series(lambda d: 28_000 * g(d), seed=seed, **kw)


def stable(seed=0, **kw):
    """Strong seasonality (±30 %) and cloud-shadow dips, half of which the tracker did not flag."""
    kw.setdefault("seasonal", 0.30)
    dips = tuple((f"{y}-{m:02d}-{dd:02d}", 0.6) for y in (2020, 2021, 2022) for m, dd in ((3, 4), (7, 2), (10, 5)))
    spikes = tuple((f"{y}-{m:02d}-{dd:02d}", 1.5) for y in (2021, 2022) for m, dd in ((5, 4), (11, 5)))
    return series(lambda d: 90_000, seed=seed, dips=dips, spikes=spikes, **kw)


# --- Scenarios with parts, footprints and event windows (the benchmark and the rule tests) ----------------------------

from dataclasses import dataclass, field  # noqa: E402

from scarmon.tracking.features import footprint_frames  # noqa: E402


@dataclass(frozen=True)
class Part:
    """One part of a scar: its area over time (m², before season and noise) and where it lies from the centre."""

    area: object  # callable date -> m²
    azimuth_deg: float = 0.0
    distance_m: float = 0.0


@dataclass(frozen=True)
class Event:
    """A true growth event: [start, end] of the growth; kind 'step' (between two acquisitions) or 'gradual';
    `plus10`: the date the growth first exceeds +10 % (gradual events; None for steps)."""

    name: str
    start: str
    end: str
    kind: str = "step"
    plus10: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    parts: tuple[Part, ...]
    events: tuple[Event, ...] = ()
    start: str = "2021-01-01"
    end: str = "2023-06-01"
    seasonal: float = 0.12
    noise: float = 0.012
    p_cloud: float = 0.45
    cloudy: tuple[tuple[str, str, float], ...] = ()  # (from, to, p_cloud) cloudy seasons
    overshoots: tuple[tuple[str, float, bool], ...] = ()  # (date, factor, flagged by the tracker)
    kw: dict = field(default_factory=dict)


def _d(s):
    return dt.date.fromisoformat(s)


def scenario_series(scn, seed):
    """Observations of `scn` with the new-ground columns computed as the pipeline does (footprint = union of the
    masks of footprint_frames; parts grow and shrink concentrically, so a part's ground outside the footprint is its
    area beyond the footprint's largest extent of it, and the ground it lost is the converse), plus boundary noise.
    Cloudy acquisitions are not frames (the ingest rejects them); partly clear ones are flagged low-confidence below
    0.9 like the tracker does; `overshoots` are single frames whose area overshoots (snow fringe, cloud edge)."""
    rng = random.Random(f"{scn.name}:{seed}")
    d, end = _d(scn.start), _d(scn.end)
    odd = {}
    for k, f, flagged in scn.overshoots:
        dd = d + dt.timedelta(days=5 * round((_d(k) - d).days / 5))
        odd[dd] = (f, flagged)
    frames = []  # (date, part areas, factor, clear, low)
    while d <= end:
        p = scn.p_cloud
        for a, b, pc in scn.cloudy:
            if _d(a) <= d <= _d(b):
                p = pc
        if d in odd or rng.random() > p:
            season = 1 - scn.seasonal * math.cos(2 * math.pi * (d.timetuple().tm_yday - 200) / 365.25)
            factor = season * (1 + rng.gauss(0, scn.noise))
            clear = rng.choice([1.0, 1.0, 1.0, 1.0, 0.96, 0.85])
            low = clear < 0.9
            over = 1.0
            if d in odd:
                over, flagged = odd[d]
                clear, low = (0.86, True) if flagged else (1.0, False)
            frames.append((d, [pt.area(d) * factor for pt in scn.parts], over, clear, low))
        d += dt.timedelta(days=5)
    dates = [f[0].isoformat() for f in frames]
    usable = [not f[4] for f in frames]
    out = []
    for i, (day, areas, over, clear, low) in enumerate(frames):
        total = sum(areas)
        refs = footprint_frames(dates, usable, i)
        ng = lost = az = dist = None
        if refs:
            fp = [max(frames[j][1][k] * frames[j][2] for j in refs) for k in range(len(areas))]
            gains = [max(0.0, a * over - f) for a, f in zip(areas, fp, strict=True)]
            losses = [max(0.0, f - a * over) for a, f in zip(areas, fp, strict=True)]
            ng = sum(gains) + total * abs(rng.gauss(0, scn.noise / 2))
            lost = sum(losses) + total * abs(rng.gauss(0, scn.noise / 2))
            k = max(range(len(areas)), key=lambda k: gains[k])
            az, dist = scn.parts[k].azimuth_deg, scn.parts[k].distance_m
        out.append(
            AlertObservation(
                day.isoformat(),
                f"S2_{day:%Y%m%d}",
                total * over,
                low_confidence=low,
                clear_fraction=clear,
                scar_clear_fraction=clear,
                new_ground_m2=ng,
                lost_ground_m2=lost,
                new_ground_azimuth_deg=az,
                new_ground_distance_m=dist,
            )
        )
    return out


def _const(v):
    return lambda d: v


def _plus10(fn, start, end, base=None):
    """First date in [start, end] (daily) where fn exceeds +10 % of fn(start) (or of `base`)."""
    d0, d1 = _d(start), _d(end)
    ref = base if base is not None else fn(d0)
    d = d0
    while d <= d1 + dt.timedelta(days=400):
        if fn(d) >= 1.1 * ref:
            return d.isoformat()
        d += dt.timedelta(days=1)
    return None


def _creep(d):
    """Accelerating creep: +50 % over 20 months from 2021-10-01 (quadratic in time)."""
    t = ((d - _d("2021-10-01")).days) / ((_d("2023-06-01") - _d("2021-10-01")).days)
    t = min(max(t, 0.0), 1.0)
    return 200_000 * (1 + 0.5 * t * t)


def _monsoon(d):
    return 150_000 * ramp([("2022-06-10", 1.0), ("2022-09-10", 1.3)])(d)


_fail = ramp([("2022-10-11", 1.0), ("2022-10-12", 2.5)])
_fail_monsoon = ramp([("2022-07-04", 1.0), ("2022-07-05", 2.0)])
_lobe = ramp([("2021-09-14", 0.0), ("2021-09-15", 150_000.0), ("2022-03-01", 150_000.0), ("2022-06-01", 30_000.0)])
_zone = ramp([("2022-03-01", 0.0), ("2022-06-01", 200_000.0)])


SCENARIOS = (
    Scenario(
        "failure-cloudy-autumn",
        "x2.5 between two acquisitions on 2022-10-12 in a cloudy autumn",
        (Part(lambda d: 120_000 * _fail(d), 200.0, 150.0),),
        (Event("failure", "2022-10-12", "2022-10-12"),),
        cloudy=(("2022-09-20", "2022-12-15", 0.7),),
    ),
    Scenario(
        "monsoon-short-history",
        "monitoring from 2022-01-10; +30 % over three monsoon months from 2022-06-10",
        (Part(_monsoon, 160.0, 120.0),),
        (
            Event(
                "monsoon expansion",
                "2022-06-10",
                "2022-09-10",
                "gradual",
                _plus10(_monsoon, "2022-06-10", "2022-09-10"),
            ),
        ),
        start="2022-01-10",
        end="2023-03-01",
        cloudy=(("2022-06-01", "2022-09-15", 0.7),),
    ),
    Scenario(
        "accelerating-creep",
        "+50 % over 20 months from 2021-10-01, accelerating",
        (Part(_creep, 90.0, 100.0),),
        (Event("creep", "2021-10-01", "2023-06-01", "gradual", _plus10(_creep, "2021-10-01", "2023-06-01")),),
        start="2020-06-01",
    ),
    Scenario(
        "failure-then-new-zone",
        "x1.75 failure 2021-09-15; from 2022-03-01 its lobe revegetates (-1.2e5 m²) while "
        "a new zone opens at the head (+2.0e5 m² in three months)",
        (Part(_const(200_000.0), 0.0, 0.0), Part(_lobe, 220.0, 300.0), Part(_zone, 20.0, 420.0)),
        (
            Event("failure", "2021-09-15", "2021-09-15"),
            Event(
                "new zone",
                "2022-03-01",
                "2022-06-01",
                "gradual",
                _plus10(lambda d: 350_000 + _zone(d), "2022-03-01", "2022-06-01", 350_000.0),
            ),
        ),
        start="2021-01-01",
        end="2023-01-01",
    ),
    Scenario(
        "cloudy-after-failure",
        "x2 on 2022-07-05 with the next weeks cloudy (monsoon)",
        (Part(lambda d: 80_000 * _fail_monsoon(d), 270.0, 90.0),),
        (Event("failure", "2022-07-05", "2022-07-05"),),
        start="2021-03-01",
        end="2023-03-01",
        cloudy=(("2022-06-25", "2022-08-10", 0.8),),
    ),
    Scenario(
        "overshoots",
        "stable scar; snow fringes and cloud edges touching it inflate single frames (+25-60 %), "
        "half of them not flagged by the tracker",
        (Part(_const(100_000.0), 0.0, 0.0),),
        (),
        overshoots=tuple(
            (f"{y}-{md}", f, fl)
            for y in (2021, 2022)
            for md, f, fl in (
                ("01-20", 1.45, False),
                ("02-14", 1.6, True),
                ("03-10", 1.3, False),
                ("07-15", 1.25, False),
                ("11-25", 1.5, True),
                ("12-20", 1.35, False),
            )
        ),
    ),
    Scenario(
        "stable-strong-seasonal",
        "control: ±30 % seasonality, constant scar",
        (Part(_const(90_000.0)),),
        (),
        seasonal=0.30,
    ),
    Scenario(
        "stable-summer-start",
        "control: monitoring starts in July (smallest scar) under ±25 % seasonality: the first autumn is the test",
        (Part(_const(60_000.0)),),
        (),
        start="2022-07-01",
        end="2023-09-01",
        seasonal=0.25,
    ),
)
"""Scenarios the generator of scarmon.demo lacks, as area series (the alert rules only see numbers)."""


def scenario(name):
    return next(s for s in SCENARIOS if s.name == name)
