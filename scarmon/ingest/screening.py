"""Per-AOI cloud screening on the SCL band: scene-level `eo:cloud_cover` is for the whole 110 km tile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scarmon import defaults


@dataclass(frozen=True)
class Screening:
    coverage: float  # share of AOI pixels with data
    clear_fraction: float  # share of the covered AOI pixels that are not shadow/cloud/cirrus/snow
    accepted: bool
    reason: str | None  # why rejected, for people and for the manifest


def clear_pixels(scl: np.ndarray) -> np.ndarray:
    """Pixels fit to measure NDVI on: with data, not cloud shadow, cloud, cirrus or snow (SCL 2 terrain shadow is)."""
    bad = defaults.SCL_NO_DATA | defaults.SCL_NOT_CLEAR
    return ~np.isin(scl, list(bad))


def screen(scl: np.ndarray, aoi: np.ndarray, *, min_coverage: float, max_cloud_fraction: float) -> Screening:
    """Coverage and clear fraction of the AOI pixels of an SCL mosaic, and whether they pass the site's thresholds."""
    n = int(aoi.sum())
    if n == 0:
        return Screening(0.0, 0.0, False, "the AOI has no pixels on the screening grid")
    covered = aoi & ~np.isin(scl, list(defaults.SCL_NO_DATA))
    coverage = float(covered.sum()) / n
    clear = float((clear_pixels(scl) & aoi).sum()) / max(int(covered.sum()), 1)
    if coverage < min_coverage:
        return Screening(coverage, clear, False, f"coverage {below(coverage, min_coverage, 'min_coverage ')}")
    if clear < 1 - max_cloud_fraction:
        why = f"clear fraction {below(clear, 1 - max_cloud_fraction)} (max_cloud_fraction {max_cloud_fraction:.2f})"
        return Screening(coverage, clear, False, why)
    return Screening(coverage, clear, True, None)


def below(value: float, limit: float, name: str = "") -> str:
    """ "0.48 < 0.90", with as many decimals as it takes for the two numbers to read differently (0.8951 against
    0.90 reads "0.895 < 0.900", never "0.90 < 0.90")."""
    digits = 2
    while digits < 6 and f"{value:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f} < {name}{limit:.{digits}f}"
