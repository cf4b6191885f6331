"""Spatiotemporal features of the scar (paper step 4): area, change, expansion direction, advance rate, confidence.

Pure functions of masks and numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from scarmon import defaults
from scarmon.ingest.screening import below


@dataclass(frozen=True)
class Observation:
    """One tracked frame, measured."""

    date: str
    scene_id: str
    area_m2: float
    clear_fraction: float
    scar_clear_fraction: float | None = None  # clear share of the scar and its surroundings (the AOI's can hide it)
    change_m2: float | None = None  # against the previous frame
    change_pct: float | None = None
    same_season_change_pct: float | None = None  # against the frame nearest one year before (±45 days)
    expansion_azimuth_deg: float | None = None  # where the added area lies, clockwise from grid north
    advance_m_per_day: float | None = None  # added area / previous perimeter / days
    low_confidence: bool = False
    low_confidence_reason: str = ""
    tracker_note: str = ""  # why the tracker held new area on this frame (cloud/snow edge, jump)
    new_ground_m2: float | None = None  # mask outside the footprint (earlier masks, see footprint_frames)
    lost_ground_m2: float | None = None  # footprint no longer in the mask
    new_ground_azimuth_deg: float | None = None  # where the new ground lies from the footprint's centre
    new_ground_distance_m: float | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    def to_csv_row(self) -> dict[str, Any]:
        """The row for people (series.csv, spreadsheets): measured values rounded to what they can tell (areas to
        the m², percentages to 0.01, rates to the mm per day); series.json keeps them unrounded."""
        return {k: round(v, CSV_DECIMALS.get(k, 4)) if isinstance(v, float) else v for k, v in self.to_row().items()}


CSV_DECIMALS = {
    "area_m2": 1,
    "change_m2": 1,
    "new_ground_m2": 1,
    "lost_ground_m2": 1,
    "change_pct": 2,
    "same_season_change_pct": 2,
    "expansion_azimuth_deg": 1,
    "new_ground_azimuth_deg": 1,
    "new_ground_distance_m": 1,
    "advance_m_per_day": 3,
}
"""Decimals per series.csv column (others: 4, the fractions)."""


def measure(mask: np.ndarray, prev: np.ndarray | None, *, pixel_m: float, days: float | None) -> dict[str, Any]:
    """Area, change, expansion azimuth and boundary advance rate of one mask against the previous one."""
    area = float(mask.sum()) * pixel_m * pixel_m
    out: dict[str, Any] = {"area_m2": area}
    if prev is None:
        return out
    prev_area = float(prev.sum()) * pixel_m * pixel_m
    out["change_m2"] = area - prev_area
    out["change_pct"] = 100.0 * (area - prev_area) / prev_area if prev_area else None
    added = mask & ~prev
    if added.sum() and prev.any():
        (r0, c0), (r1, c1) = ndimage.center_of_mass(prev), ndimage.center_of_mass(added)
        out["expansion_azimuth_deg"] = round(math.degrees(math.atan2(c1 - c0, r0 - r1)) % 360.0, 1)
        perimeter = perimeter_m(prev, pixel_m)
        if days and perimeter:
            out["advance_m_per_day"] = float(added.sum()) * pixel_m * pixel_m / perimeter / days
    return out


def perimeter_m(mask: np.ndarray, pixel_m: float) -> float:
    """Boundary length: pixel-edge count times π/4, the unbiased correction for edges of a digitised curve."""
    m = np.pad(mask, 1).astype(np.int8)
    edges = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    return float(edges) * pixel_m * math.pi / 4


def same_season_change(dates: list[str], areas: list[float], i: int, window_days: int = 45) -> float | None:
    """Change (%) against the frame nearest to one year before frame i, if one lies within ±window_days."""
    target = dt.date.fromisoformat(dates[i]) - dt.timedelta(days=365)
    best = min(range(i), key=lambda j: abs((dt.date.fromisoformat(dates[j]) - target).days), default=None)
    if best is None or abs((dt.date.fromisoformat(dates[best]) - target).days) > window_days or not areas[best]:
        return None
    return 100.0 * (areas[i] - areas[best]) / areas[best]


def scar_clear_fraction(valid: np.ndarray, mask: np.ndarray, margin_px: int = defaults.SCAR_MARGIN_PX) -> float | None:
    """Clear share of the scar and a margin around it: a cloud sitting on the scar hides its change even when the
    AOI as a whole is clear enough."""
    if not mask.any():
        return None
    around = ndimage.binary_dilation(mask, iterations=margin_px)
    return round(float(valid[around].mean()), 4)


def confidence_flags(
    areas: list[float],
    clear: list[float],
    *,
    scar_clear: list[float | None] | None = None,
    tracker: list[str] | None = None,
    min_clear: float = defaults.LOW_CONFIDENCE_CLEAR,
    jump: float = defaults.LOW_CONFIDENCE_JUMP,
) -> list[tuple[bool, str]]:
    """Low-confidence frames: few clear pixels (over the AOI or over the scar), the tracker held new area it could
    not trust (`tracker`: its reason per frame, "" for none), or an area spike/dip against BOTH neighbours (a cloud
    shadow SCL missed, a snow patch) that the next frame undoes. The newest frame has one neighbour and cannot be a
    spike yet."""
    flags = []
    scar_clear = scar_clear or [None] * len(areas)
    tracker = tracker or [""] * len(areas)
    for i, (a, c) in enumerate(zip(areas, clear, strict=False)):
        reasons = [tracker[i]] if tracker[i] else []
        if c < min_clear:
            reasons.append(f"clear fraction {below(c, min_clear)}")
        sc = scar_clear[i]
        if sc is not None and sc < min_clear:
            reasons.append(f"{100 * (1 - sc):.0f}% of the scar under cloud, shadow or snow")
        if 0 < i < len(areas) - 1 and areas[i - 1] and areas[i + 1]:
            d_prev, d_next = (a - areas[i - 1]) / areas[i - 1], (a - areas[i + 1]) / areas[i + 1]
            if abs(d_prev) > jump and abs(d_next) > jump and d_prev * d_next > 0:
                reasons.append(
                    f"area {'spike' if d_prev > 0 else 'dip'} of {100 * d_prev:+.0f}% undone by the next frame"
                )
        flags.append((bool(reasons), "; ".join(reasons)))
    return flags


def footprint_frames(
    dates: list[str],
    usable: list[bool],
    i: int,
    *,
    lags_days: tuple[int, ...] = defaults.ALERT_GROUND_LAGS_DAYS,
    tolerance_days: int = defaults.ALERT_GROUND_TOLERANCE_DAYS,
) -> list[int]:
    """Indices of the frames whose masks make frame i's footprint: for each lag, the usable (confident) frame
    nearest to `lag` days before frame i, within ±tolerance_days and never later than the shortest lag. Empty while
    the history is shorter than the shortest lag less the tolerance (no footprint: no new-ground measurement)."""
    day = dt.date.fromisoformat(dates[i][:10])
    latest = day - dt.timedelta(days=min(lags_days) - tolerance_days)
    out: list[int] = []
    for lag in lags_days:
        target = day - dt.timedelta(days=lag)
        cands = [
            j
            for j in range(i)
            if usable[j]
            and dt.date.fromisoformat(dates[j][:10]) <= latest
            and abs((dt.date.fromisoformat(dates[j][:10]) - target).days) <= tolerance_days
        ]
        if cands:
            best = min(cands, key=lambda j: abs((dt.date.fromisoformat(dates[j][:10]) - target).days))
            if best not in out:
                out.append(best)
    return sorted(out)


def new_ground(
    mask: np.ndarray, footprint: np.ndarray | None, *, pixel_m: float, margin_px: int = defaults.ALERT_GROUND_MARGIN_PX
) -> dict[str, float | None]:
    """Ground in the mask outside the (dilated) footprint, ground of the footprint outside the (dilated) mask, and
    where the new ground lies: azimuth (clockwise from grid north) and distance of its centroid from the footprint's
    centroid. A new zone opening while another part revegetates shows here even when the total area is flat."""
    if footprint is None or not footprint.any():
        return {}
    square = np.ones((3, 3), bool)
    grow = ndimage.binary_dilation(footprint, square, iterations=margin_px) if margin_px else footprint
    keep = ndimage.binary_dilation(mask, square, iterations=margin_px) if margin_px and mask.any() else mask
    added, lost = mask & ~grow, footprint & ~keep
    px = pixel_m * pixel_m
    out: dict[str, float | None] = {"new_ground_m2": float(added.sum()) * px, "lost_ground_m2": float(lost.sum()) * px}
    if added.any():
        (r0, c0), (r1, c1) = ndimage.center_of_mass(footprint), ndimage.center_of_mass(added)
        out["new_ground_azimuth_deg"] = round(math.degrees(math.atan2(c1 - c0, r0 - r1)) % 360.0, 1)
        out["new_ground_distance_m"] = round(math.hypot(c1 - c0, r1 - r0) * pixel_m, 1)
    return out
