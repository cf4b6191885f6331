"""DN → reflectance → NDVI → 8-bit video frame. Pure functions of arrays and item metadata."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from scarmon import defaults


def reflectance_scaling(item: Mapping[str, Any], asset_key: str) -> tuple[float, float]:
    """(scale, offset) such that reflectance = DN * scale + offset, for one asset of a Sentinel-2 L2A item.

    NDVI is not invariant to an additive offset: getting this wrong fakes a scar-area jump on 2022-01-25.
    """
    props = item.get("properties", {})
    # 1. Earth Search legacy collection: DN already harmonized, and its raster:bands offset is unreliable.
    if props.get("earthsearch:boa_offset_applied") is True:
        return defaults.L2A_SCALE, 0.0
    # 2. The asset says it (Earth Search sentinel-2-c1-l2a, and any catalog that fills raster:bands).
    bands = item.get("assets", {}).get(asset_key, {}).get("raster:bands") or []
    if bands and ("scale" in bands[0] or "offset" in bands[0]):
        return float(bands[0].get("scale", 1.0)), float(bands[0].get("offset", 0.0))
    # 3. Planetary Computer: no raster:bands; the offset follows the processing baseline (also for reprocessed
    #    old scenes), not the acquisition date.
    if baseline_has_offset(props.get("s2:processing_baseline")):
        return defaults.L2A_SCALE, defaults.BASELINE_OFFSET_DN * defaults.L2A_SCALE
    # 4. Older baselines: plain scaling.
    return defaults.L2A_SCALE, 0.0


def baseline_has_offset(baseline: str | None) -> bool:
    """True for processing baselines ≥ 04.00 ("04.00", "05.11"...); unknown baselines are taken as old."""
    if not baseline:
        return False
    try:
        major, minor = (int(p) for p in str(baseline).split(".")[:2])
    except ValueError:
        return False
    ref_major, ref_minor = (int(p) for p in defaults.BASELINE_OFFSET_FROM.split("."))
    return (major, minor) >= (ref_major, ref_minor)


def to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Float32 reflectance; DN 0 (no data) becomes NaN."""
    out = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    out[dn == 0] = np.nan
    return out


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI with reflectances clipped at 0 (dark water can go slightly negative after the offset); NaN where undefined."""
    red = np.clip(red, 0, None)
    nir = np.clip(nir, 0, None)
    total = red + nir
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (nir - red) / total
    out[~(total > 0)] = np.nan
    return out.astype(np.float32)


def video_frame(ndvi_arr: np.ndarray, valid: np.ndarray | None = None,
                ndvi_range: tuple[float, float] = defaults.VIDEO_NDVI_RANGE) -> np.ndarray:
    """8-bit gray frame with a fixed NDVI mapping, so a gray level means the same NDVI in every frame."""
    lo, hi = ndvi_range
    scaled = (np.nan_to_num(ndvi_arr, nan=lo) - lo) / (hi - lo)
    out = np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out
