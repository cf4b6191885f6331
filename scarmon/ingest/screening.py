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
        return Screening(coverage, clear, False, f"coverage {coverage:.2f} < min_coverage {min_coverage:.2f}")
    if clear < 1 - max_cloud_fraction:
        return Screening(
            coverage,
            clear,
            False,
            f"clear fraction {clear:.2f} < {1 - max_cloud_fraction:.2f} (max_cloud_fraction {max_cloud_fraction:.2f})",
        )
    return Screening(coverage, clear, True, None)
