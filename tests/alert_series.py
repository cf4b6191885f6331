"""Area series shaped like the paper's sites, for alert tests (no imagery: the alert rules only see numbers)."""

from __future__ import annotations

import datetime as dt
import math
import random

from scarmon.alerts.rules import AlertObservation


def series(area, *, start="2020-01-03", end="2023-01-01", seed=0, seasonal=0.10, p_cloud=0.5, dips=(),
           spikes=(), dip_flagged=True, noise=0.01):
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
        for (d0, v0), (d1, v1) in zip(pts, pts[1:]):
            if d <= d1:
                return v0 + (v1 - v0) * (d - d0).days / max(1, (d1 - d0).days)
        return pts[-1][1]
    return f


BAIGE_EVENTS = ("2021-10-11", "2021-11-03")
"""Two failures three weeks apart (Baige: 2018-10-11 and 2018-11-03), after +53 % of creep in the year before."""


def baige(seed=0, **kw):
    g = ramp([("2020-10-01", 1.0), ("2021-10-01", 1.53), ("2021-10-10", 1.53), ("2021-10-11", 2.5),
              ("2021-11-02", 2.5), ("2021-11-03", 4.0)])
    return series(lambda d: 150_000 * g(d), seed=seed, **kw)


SELA_EVENT = "2021-07-19"
"""A flood triggers +330 % within six weeks, then the scar contracts as its margins revegetate (Sela)."""


def sela(seed=0, **kw):
    g = ramp([("2021-07-18", 1.0), ("2021-07-19", 1.7), ("2021-08-01", 2.8), ("2021-08-15", 3.8),
              ("2021-08-30", 4.3), ("2022-06-01", 3.6)])
    return series(lambda d: 28_000 * g(d), seed=seed, **kw)


def stable(seed=0, **kw):
    """Strong seasonality (±30 %) and cloud-shadow dips, half of which the tracker did not flag."""
    kw.setdefault("seasonal", 0.30)
    dips = tuple((f"{y}-{m:02d}-{dd:02d}", 0.6) for y in (2020, 2021, 2022) for m, dd in ((3, 4), (7, 2), (10, 5)))
    spikes = tuple((f"{y}-{m:02d}-{dd:02d}", 1.5) for y in (2021, 2022) for m, dd in ((5, 4), (11, 5)))
    return series(lambda d: 90_000, seed=seed, dips=dips, spikes=spikes, **kw)
