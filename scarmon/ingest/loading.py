"""Screening and loading one scene onto the site grid: SCL first, B04/B08 only for accepted scenes.

Cost model (what this module minimises): the COG blocks read, and the resampling work.
- An item of the pass is read only while part of the grid is still empty: once the SCL of the items read so far
  has data on every grid pixel, the other tiles of the pass are neither screened nor loaded (the mosaic keeps the
  first item with data, so they could not change a pixel).
- Band windows of a later item cover only the bounding box of the clear pixels the earlier items left empty.
- Same-CRS windows (the usual case: a site in its tile's UTM zone) are resampled in numpy: the 10 m → grid step
  is a pure axis-aligned upsampling, two small separable passes, computed the way GDAL's bilinear kernel does
  (same weights, invalid neighbours dropped and the weights renormalised). Windows in another CRS take one GDAL
  warp for both bands together.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.warp import Resampling, reproject
from shapely.geometry import Polygon

from scarmon import defaults
from scarmon.grid import SiteGrid
from scarmon.ingest.radiometry import (
    bright_mask,
    ndvi,
    offset_contradicted,
    reflectance_scaling,
    to_reflectance,
    warm_season,
)
from scarmon.ingest.reader import Reader, Window2D
from scarmon.ingest.scenes import Scene, asset_key, covering_first, missing_bands
from scarmon.ingest.screening import Screening, clear_pixels, screen

log = logging.getLogger(__name__)


class SceneRejected(Exception):
    """A scene that cannot become a frame now. `retry`: the cause may pass (assets not published yet)."""

    def __init__(self, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.retry = retry


@dataclass(frozen=True)
class Frame:
    scene: Scene
    ndvi: np.ndarray  # float32 on the site grid; NaN where not observed (SCL not clear, or cloud/snow by spectrum)
    screening: Screening
    bright_fraction: float | None = None  # share of the AOI's SCL-clear pixels the spectral test masked; None: off

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(np.isfinite(self.ndvi))


@dataclass(frozen=True)
class Screened:
    """What screening learnt about a scene: the result, the SCL mosaic, and the items whose bands may be needed."""

    screening: Screening
    scl: np.ndarray
    covering: tuple[dict[str, Any], ...]
    aoi: np.ndarray  # the AOI's pixels on the 20 m screening grid


# --- Resampling (pure) -----------------------------------------------------------------------------------------------


def _axis_aligned(t: Affine) -> bool:
    return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


def _same_crs(a: Any, b: Any) -> bool:
    from rasterio.crs import CRS

    return bool(CRS.from_user_input(a) == CRS.from_user_input(b))


def numpy_path(win: Window2D, grid: SiteGrid) -> bool:
    """True when `win` maps onto `grid` by an axis-aligned affine (same CRS, north-up): no GDAL warp needed."""
    return _axis_aligned(win.transform) and _same_crs(win.crs, grid.crs)


def _axis_coords(n_dst: int, dst0: float, dst_res: float, src0: float, src_res: float) -> np.ndarray:
    """Fractional source pixel coordinates (pixel centres at i + 0.5) of the destination pixel centres, on one axis."""
    centres = dst0 + (np.arange(n_dst, dtype=np.float64) + 0.5) * dst_res
    return (centres - src0) / src_res


def _grid_axes(win: Window2D, grid: SiteGrid) -> tuple[np.ndarray, np.ndarray]:
    t = win.transform
    u = _axis_coords(grid.width, grid.x0, grid.resolution, t.c, t.a)
    v = _axis_coords(grid.height, -grid.y0, grid.resolution, -t.f, -t.e)
    return v, u


def _bilinear_axis(coords: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w0, w1) per destination pixel: GDAL bilinear taps and weights; taps outside the source weigh 0."""
    pos = coords - 0.5
    i0 = np.floor(pos).astype(np.int64)
    w1 = pos - i0
    w0 = 1.0 - w1
    i1 = i0 + 1
    w0 = np.where((i0 >= 0) & (i0 < n_src), w0, 0.0)
    w1 = np.where((i1 >= 0) & (i1 < n_src), w1, 0.0)
    return np.clip(i0, 0, n_src - 1), np.clip(i1, 0, n_src - 1), w0, w1


def _separable(a: np.ndarray, rows: tuple[np.ndarray, ...], cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """Σ w_r w_c a[r, c] over the 2 × 2 taps, as two 1-D passes (rows, then columns), in float64."""
    r0, r1, wr0, wr1 = rows
    c0, c1, wc0, wc1 = cols
    tmp = a[..., r0, :] * wr0[:, None] + a[..., r1, :] * wr1[:, None]
    return np.asarray(tmp[..., :, c0] * wc0 + tmp[..., :, c1] * wc1)


def bilinear_to_grid(win: Window2D, grid: SiteGrid) -> np.ndarray:
    """Pure: float window(s) (2-D, or 3-D band-first), NaN = no data, resampled bilinearly onto the grid in numpy.

    Requires `numpy_path(win, grid)`. Matches GDAL's bilinear warp: a pixel whose centre falls on an invalid source
    pixel is NaN; otherwise invalid taps are dropped and the remaining weights renormalised.
    """
    src = np.asarray(win.data, dtype=np.float64)
    v, u = _grid_axes(win, grid)
    rows, cols = _bilinear_axis(v, src.shape[-2]), _bilinear_axis(u, src.shape[-1])
    valid = np.isfinite(src)
    num = _separable(np.where(valid, src, 0.0), rows, cols)
    den = _separable(valid.astype(np.float64), rows, cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[den < 1e-5] = np.nan
    # GDAL applies a destination pixel only when the source pixel under its centre is valid.
    r, c = np.floor(v).astype(np.int64), np.floor(u).astype(np.int64)
    h, w = src.shape[-2:]
    inside = ((r >= 0) & (r < h))[:, None] & ((c >= 0) & (c < w))[None, :]
    centre = valid[..., np.clip(r, 0, h - 1)[:, None], np.clip(c, 0, w - 1)[None, :]] & inside
    out[~centre] = np.nan
    return np.asarray(out, dtype=np.float32)


def nearest_to_grid(win: Window2D, grid: SiteGrid, nodata: float) -> np.ndarray:
    """Pure: nearest-neighbour placement of a window onto the grid (requires `numpy_path`); nodata outside it."""
    v, u = _grid_axes(win, grid)
    h, w = win.data.shape[-2:]
    r = np.floor(v).astype(np.int64)
    c = np.floor(u).astype(np.int64)
    rin, cin = (r >= 0) & (r < h), (c >= 0) & (c < w)
    out = win.data[..., np.clip(r, 0, h - 1)[:, None], np.clip(c, 0, w - 1)[None, :]]
    return np.where(rin[:, None] & cin[None, :], out, np.asarray(nodata, dtype=win.data.dtype))


def warp_to_grid(win: Window2D, grid: SiteGrid, *, resampling: Resampling, nodata: float) -> np.ndarray:
    """Pure: a native window (2-D, or 3-D band-first) onto the grid, nodata outside the window.

    Same CRS: numpy (nearest or bilinear, NaN nodata for bilinear). Otherwise one GDAL warp for all bands.
    """
    if numpy_path(win, grid):
        if resampling == Resampling.nearest:
            return nearest_to_grid(win, grid, nodata)
        if resampling == Resampling.bilinear and np.isnan(nodata):
            return bilinear_to_grid(win, grid)
    dst = np.full((*win.data.shape[:-2], *grid.shape), nodata, dtype=win.data.dtype)
    reproject(
        win.data,
        dst,
        src_transform=win.transform,
        src_crs=win.crs,
        src_nodata=nodata,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=nodata,
        resampling=resampling,
    )
    return dst


def sub_grid(grid: SiteGrid, need: np.ndarray) -> tuple[SiteGrid, tuple[slice, slice]] | None:
    """Pure: the smallest sub-grid holding every True pixel of `need` (grid-shaped), and its slices; None if none."""
    rows, cols = np.flatnonzero(need.any(axis=1)), np.flatnonzero(need.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    res = grid.resolution
    sub = SiteGrid(grid.epsg, res, grid.x0 + c0 * res, grid.y0 - r0 * res, c1 - c0, r1 - r0)
    return sub, (slice(r0, r1), slice(c0, c1))


# --- Screening --------------------------------------------------------------------------------------------------------


def usable_items(scene: Scene) -> list[dict[str, Any]]:
    """Items that have B04, B08 and SCL; SceneRejected(retry=True) when none has (assets may be published later)."""
    items = [i for i in scene.items if not missing_bands(i)]
    for item in scene.items:
        if missing := missing_bands(item):
            log.warning("scene %s: item %s has no %s asset; left out", scene.id, item["id"], "/".join(missing))
    if not items:
        first = scene.items[0]
        raise SceneRejected(f"item {first['id']} has no {'/'.join(missing_bands(first))} asset", retry=True)
    return items


def read_scl(scene: Scene, grid: SiteGrid, reader: Reader) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """SCL mosaic on the 20 m screening grid, and the items that fill part of it.

    Items are taken in the scene's order (the mosaic's priority); reading stops as soon as every pixel of the grid
    has data, so a tile that already covers the site saves the other tiles' reads.
    """
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    scl = np.zeros(sgrid.shape, np.uint8)
    covering: list[dict[str, Any]] = []
    for item in usable_items(scene):
        win = reader.read_window(item["assets"][asset_key(item, "scl")]["href"], sgrid)
        if win is None:
            continue
        layer = warp_to_grid(win, sgrid, resampling=Resampling.nearest, nodata=0)
        empty = scl == 0
        fill = empty & (layer != 0)
        if fill.any():
            scl[fill] = layer[fill]
            covering.append(item)
        if not (scl == 0).any():
            break
    return scl, covering


def screen_scene(
    scene: Scene, aoi: Polygon, grid: SiteGrid, reader: Reader, *, min_coverage: float, max_cloud_fraction: float
) -> Screened:
    scl, covering = read_scl(covering_first(scene, aoi), grid, reader)
    aoi20 = grid.at_resolution(defaults.SCREEN_RESOLUTION_M).mask(aoi)
    result = screen(scl, aoi20, min_coverage=min_coverage, max_cloud_fraction=max_cloud_fraction)
    return Screened(result, scl, tuple(covering), aoi20)


# --- Loading ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """A scene on the site grid: NDVI (NaN = not observed), SCL's clear pixels, and the clear pixels with data that
    the spectral test found bright (cloud or snow SCL missed; NaN in `ndvi`)."""

    ndvi: np.ndarray
    clear: np.ndarray
    bright: np.ndarray

    def bright_fraction(self, aoi: np.ndarray) -> float:
        """Share of the AOI's SCL-clear pixels with data that the spectral test marked not observed."""
        seen = aoi & self.clear & (np.isfinite(self.ndvi) | self.bright)
        n = int(seen.sum())
        return float((self.bright & aoi).sum()) / n if n else 0.0


def spectral_layers(bands: np.ndarray, clear: np.ndarray, bright_red_min: float | None) -> Layers:
    """Pure: NDVI of (red, NIR) reflectance, NaN where SCL is not clear or the spectral test finds cloud or snow
    (`bright_mask` at `bright_red_min`; None turns the test off)."""
    out = ndvi(bands[0], bands[1])
    if bright_red_min is None:
        bright = np.zeros(clear.shape, bool)
    else:
        bright = bright_mask(bands[0], bands[1], red_min=bright_red_min) & clear
    np.copyto(out, np.float32(np.nan), where=~clear | bright)
    return Layers(out, clear, bright)


def bright_warning(
    fraction: float, *, month: int, lat: float, snow_seen: bool, bright_red_min: float, scene_id: str
) -> str | None:
    """Pure: the warning to log when the spectral test masked a large share of a warm-season frame without snow
    (SCL's), where a bright scar wrongly taken for cloud is likelier than missed cloud; None otherwise."""
    if fraction < defaults.BRIGHT_WARN_FRACTION or snow_seen or not warm_season(month, lat):
        return None
    return (
        f"scene {scene_id}: the spectral test took {100 * fraction:.0f} % of the AOI's SCL-clear pixels for cloud or "
        f"snow (red and NIR reflectance >= {bright_red_min:.2f}) on a snow-free warm-season frame; if the scar or "
        "the ground around it is bright rock or sand, raise `bright_red_min` in the site file (or set it to null): "
        "growth there is otherwise not seen"
    )


def load_ndvi(
    scene: Scene,
    items: list[dict[str, Any]] | tuple[dict[str, Any], ...],
    scl: np.ndarray,
    grid: SiteGrid,
    reader: Reader,
    *,
    bright_red_min: float | None = defaults.BRIGHT_RED_MIN,
) -> np.ndarray:
    """NDVI on the site grid, NaN where not observed (see `load_layers`)."""
    return load_layers(scene, items, scl, grid, reader, bright_red_min=bright_red_min).ndvi


def load_layers(
    scene: Scene,
    items: list[dict[str, Any]] | tuple[dict[str, Any], ...],
    scl: np.ndarray,
    grid: SiteGrid,
    reader: Reader,
    *,
    bright_red_min: float | None = defaults.BRIGHT_RED_MIN,
) -> Layers:
    """NDVI on the site grid: per-item radiometry, bilinear 10 m → grid resolution, mosaic, clear pixels only,
    minus the pixels the spectral test finds bright (cloud or snow SCL missed).

    The first item is read over the whole grid; each later one only over the bounding box of the clear pixels
    still without data, and not at all when there are none.
    """
    clear = clear_on_grid(scl, grid)
    bands = np.full((2, *grid.shape), np.nan, np.float32)
    for item in items:
        need = clear & np.isnan(bands[0])
        found = sub_grid(grid, need)
        if found is None:
            break
        target, (rs, cs) = found
        layer = item_bands(item, target, reader)
        if layer is None:
            continue
        part = bands[:, rs, cs]
        np.copyto(part, layer, where=np.isnan(part[0]))
    return spectral_layers(bands, clear, bright_red_min)


def item_bands(item: dict[str, Any], grid: SiteGrid, reader: Reader) -> np.ndarray | None:
    """(2, h, w) float32 red and NIR reflectance of one item on `grid` (bilinear), or None when it misses the grid."""
    wins = []
    for band in ("red", "nir"):
        key = asset_key(item, band)
        if key is None:
            raise SceneRejected(f"item {item['id']} has no {band} asset", retry=True)
        win = reader.read_window(item["assets"][key]["href"], grid)
        if win is None:
            return None
        scale, offset = reflectance_scaling(item, key)
        if offset_contradicted(win.data, scale, offset):
            log.warning(
                "item %s %s: the DN contradict the declared offset %g (more than 5 %% of them would be "
                "negative reflectance); check the catalog's offset metadata",
                item["id"],
                key,
                offset,
            )
        wins.append(Window2D(to_reflectance(win.data, scale, offset), win.transform, win.crs))
    red, nir = wins
    if red.data.shape == nir.data.shape and red.transform == nir.transform:
        both = Window2D(np.stack([red.data, nir.data]), red.transform, red.crs)
        return warp_to_grid(both, grid, resampling=Resampling.bilinear, nodata=np.nan)
    return np.stack([warp_to_grid(w, grid, resampling=Resampling.bilinear, nodata=np.nan) for w in wins])


def clear_on_grid(scl: np.ndarray, grid: SiteGrid) -> np.ndarray:
    """Clear SCL pixels of the 20 m screening grid, on the site grid (nearest: each 20 m pixel → its 2 m pixels)."""
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    factor = sgrid.resolution / grid.resolution
    clear = clear_pixels(scl)
    if math.isclose(factor, round(factor)) and round(factor) >= 1:
        k = round(factor)
        return np.repeat(np.repeat(clear, k, axis=0), k, axis=1)[: grid.height, : grid.width]
    win = Window2D(clear.astype(np.uint8) + 1, sgrid.transform, sgrid.crs)  # 2 clear, 1 not clear, 0 outside
    return np.asarray(warp_to_grid(win, grid, resampling=Resampling.nearest, nodata=0) == 2)


def load_scene(
    scene: Scene,
    aoi: Polygon,
    grid: SiteGrid,
    reader: Reader,
    *,
    min_coverage: float,
    max_cloud_fraction: float,
    bright_red_min: float | None = defaults.BRIGHT_RED_MIN,
) -> tuple[Screening, Frame | None]:
    """Screen a scene over the AOI; read B04/B08 only when it passes, and mask cloud and snow SCL missed by their
    spectrum (`bright_red_min`, None: off). Logs a warning when that masks a suspiciously large share."""
    s = screen_scene(scene, aoi, grid, reader, min_coverage=min_coverage, max_cloud_fraction=max_cloud_fraction)
    if not s.screening.accepted:
        return s.screening, None
    layers = load_layers(scene, s.covering, s.scl, grid, reader, bright_red_min=bright_red_min)
    if bright_red_min is None:
        return s.screening, Frame(scene, layers.ndvi, s.screening)
    fraction = layers.bright_fraction(grid.mask(aoi))
    snow = bool(((s.scl == defaults.SCL_SNOW) & s.aoi).any())
    if why := bright_warning(
        fraction,
        month=int(scene.date[5:7]),
        lat=aoi.centroid.y,
        snow_seen=snow,
        bright_red_min=bright_red_min,
        scene_id=scene.id,
    ):
        log.warning(why)
    return s.screening, Frame(scene, layers.ndvi, s.screening, bright_fraction=fraction)
