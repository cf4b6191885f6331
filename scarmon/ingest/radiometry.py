"""DN → reflectance → NDVI → 8-bit video frame. Pure functions of arrays and item metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from scarmon import defaults


def reflectance_scaling(item: Mapping[str, Any], asset_key: str) -> tuple[float, float]:
    """(scale, offset) such that reflectance = DN * scale + offset, for one asset of a Sentinel-2 L2A item.

    NDVI is not invariant to an additive offset: getting this wrong fakes a scar-area jump on 2022-01-25.
    """
    props = item.get("properties") or {}
    baseline = processing_baseline(item)
    # 1. Earth Search legacy collections (v1 `sentinel-2-l2a`, v0 `sentinel-s2-l2a-cogs`): their offset metadata is
    #    unreliable (raster:bands declares -0.1 on pre-04.00 items, whose DN carry no offset). The flag, when true,
    #    says the offset was already removed; otherwise the baseline decides, as on Planetary Computer.
    if _earth_search_legacy(item):
        applied = props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied"))
        if applied is True or not baseline_has_offset(baseline):
            return defaults.L2A_SCALE, 0.0
        return defaults.L2A_SCALE, defaults.BASELINE_OFFSET_DN * defaults.L2A_SCALE
    # 2. The asset says it (Earth Search sentinel-2-c1-l2a, and any catalog that fills raster:bands).
    assets = item.get("assets") or {}
    bands = (assets.get(asset_key) or {}).get("raster:bands") or []
    if bands and isinstance(bands[0], dict) and ("scale" in bands[0] or "offset" in bands[0]):
        return float(bands[0].get("scale", 1.0)), float(bands[0].get("offset", 0.0))
    # 3. Planetary Computer: no raster:bands; the offset follows the processing baseline (also for reprocessed
    #    old scenes), not the acquisition date.
    if baseline_has_offset(baseline):
        return defaults.L2A_SCALE, defaults.BASELINE_OFFSET_DN * defaults.L2A_SCALE
    # 4. Older baselines: plain scaling.
    return defaults.L2A_SCALE, 0.0


def _earth_search_legacy(item: Mapping[str, Any]) -> bool:
    props = item.get("properties") or {}
    if "earthsearch:boa_offset_applied" in props or "sentinel:boa_offset_applied" in props:
        return True
    if any(str(k).startswith("sentinel:") for k in props):  # Earth Search v0 (STAC 1.0.0-beta)
        return True
    return item.get("collection") == "sentinel-2-l2a" and any(str(k).startswith("earthsearch:") for k in props)


def processing_baseline(item: Mapping[str, Any]) -> str | None:
    """ "MM.mm" from `s2:processing_baseline` (string or number), `sentinel:processing_baseline`, or the product
    name's N-field (`..._N0509_...`, Earth Search v0's `sentinel:product_id`); None when nothing says it."""
    props = item.get("properties") or {}
    for key in ("s2:processing_baseline", "sentinel:processing_baseline"):
        value = props.get(key)
        if value is not None and value != "":
            return baseline_text(value)
    for key in ("s2:product_uri", "sentinel:product_id"):
        name = props.get(key)
        if isinstance(name, str) and (m := re.search(r"_N(\d{2})(\d{2})_", name)):
            return f"{m.group(1)}.{m.group(2)}"
    return None


def baseline_text(value: Any) -> str:
    """A processing baseline as "MM.mm": catalogs also write it as a number (4, 4.0, 5.09) or "4"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        major, minor = divmod(round(float(value) * 100), 100)
        return f"{major:02d}.{minor:02d}"
    text = str(value).strip()
    if re.fullmatch(r"\d{1,2}", text):
        return f"{int(text):02d}.00"
    if m := re.fullmatch(r"(\d{1,2})\.(\d{1,2})", text):
        return f"{int(m.group(1)):02d}.{int(m.group(2)):02d}"
    return text


def baseline_version(baseline: Any) -> tuple[int, int] | None:
    """(major, minor) of a processing baseline ("05.11", 5.11, "4" → (4, 0)); None when unknown or not a number."""
    if baseline is None or baseline == "":
        return None
    try:
        major, minor = (int(p) for p in baseline_text(baseline).split(".")[:2])
    except ValueError:
        return None
    return major, minor


def baseline_has_offset(baseline: Any) -> bool:
    """True for processing baselines ≥ 04.00 ("04.00", "05.11", 4, "4"...); unknown baselines are taken as old."""
    version, first = baseline_version(baseline), baseline_version(defaults.BASELINE_OFFSET_FROM)
    return version is not None and first is not None and version >= first


def offset_contradicted(dn: np.ndarray, scale: float, offset: float, *, max_share: float = 0.05) -> bool:
    """Sanity check of a declared offset against the DN: with an offset (DN carry +1000), more than `max_share`
    of the valid DN below it means negative reflectance over land, so the offset does not apply to these DN."""
    if offset >= 0 or scale <= 0:
        return False
    valid = dn[dn > 0]
    if valid.size == 0:
        return False
    return float(np.mean(valid < -offset / scale)) > max_share


def to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Float32 reflectance; DN 0 (no data) becomes NaN."""
    out = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    out[dn == 0] = np.nan
    return out


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI with reflectances clipped at 0 (dark water can go slightly negative after the offset); NaN if undefined."""
    red = np.clip(red, 0, None)
    nir = np.clip(nir, 0, None)
    total = red + nir
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray((nir - red) / total, dtype=np.float32)
    np.copyto(out, np.float32(np.nan), where=~(total > 0))
    return out


def bright_mask(
    red: np.ndarray,
    nir: np.ndarray,
    *,
    red_min: float = defaults.BRIGHT_RED_MIN,
    max_nir_red: float = defaults.BRIGHT_MAX_NIR_RED,
) -> np.ndarray:
    """Pixels that are cloud or snow by their spectrum: bright in red and NIR (both at least `red_min`) and flat
    between them (NIR/red at most `max_nir_red`). Soil is darker in red, vegetation far steeper; NaN is never bright.

    Reflectances, not DN. Thin cloud and snow mixed with ground below `red_min` stay observed: their NDVI lies
    between the ground's and the cloud's, and the trackers' guard holds new scar area next to what is masked here.
    """
    red = np.asarray(red, dtype=np.float32)
    nir = np.asarray(nir, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        out = (red >= red_min) & (nir >= red_min) & (nir <= red * np.float32(max_nir_red))
    return np.asarray(out, dtype=bool)


def warm_season(month: int, lat: float) -> bool:
    """May-October north of the equator, November-April south of it: the half year without seasonal snow at most
    sites (high mountains excepted, hence the SCL snow check next to it)."""
    north = 5 <= month <= 10
    return north if lat >= 0 else not north


def video_frame(
    ndvi_arr: np.ndarray, valid: np.ndarray | None = None, ndvi_range: tuple[float, float] = defaults.VIDEO_NDVI_RANGE
) -> np.ndarray:
    """8-bit gray frame with a fixed NDVI mapping, so a gray level means the same NDVI in every frame."""
    lo, hi = ndvi_range
    scaled = (np.nan_to_num(ndvi_arr, nan=lo) - lo) / (hi - lo)
    out = np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return np.asarray(out, dtype=np.uint8)
