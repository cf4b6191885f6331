"""Screening and loading one scene onto the site grid: SCL first, B04/B08 only for accepted scenes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.warp import Resampling, reproject
from shapely.geometry import Polygon

from scarmon import defaults
from scarmon.grid import SiteGrid
from scarmon.ingest.radiometry import ndvi, reflectance_scaling, to_reflectance
from scarmon.ingest.reader import Reader, Window2D
from scarmon.ingest.scenes import Scene, asset_key, missing_bands
from scarmon.ingest.screening import Screening, clear_pixels, screen

log = logging.getLogger(__name__)


class SceneRejected(Exception):
    """A scene that can never become a frame (e.g. its items lack the bands); recorded so it is not retried."""


@dataclass(frozen=True)
class Frame:
    scene: Scene
    ndvi: np.ndarray          # float32 on the site grid; NaN where not clear
    screening: Screening

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.ndvi)


def warp_to_grid(win: Window2D, grid: SiteGrid, *, resampling: Resampling, nodata: float) -> np.ndarray:
    """Pure: a native window reprojected onto the grid (nodata outside the window)."""
    dst = np.full(grid.shape, nodata, dtype=win.data.dtype)
    reproject(win.data, dst, src_transform=win.transform, src_crs=win.crs, src_nodata=nodata,
              dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=nodata, resampling=resampling)
    return dst


def mosaic(layers: list[np.ndarray], nodata: float) -> np.ndarray:
    """First layer with data wins; same-date tiles of one pass carry the same measurement."""
    out = layers[0].copy()
    for layer in layers[1:]:
        empty = np.isnan(out) if np.isnan(nodata) else out == nodata
        out[empty] = layer[empty]
    return out


def usable_items(scene: Scene) -> list[dict[str, Any]]:
    """Items that have B04, B08 and SCL; raise SceneRejected when none has."""
    items = [i for i in scene.items if not missing_bands(i)]
    for item in scene.items:
        if missing := missing_bands(item):
            log.warning("scene %s: item %s has no %s asset; left out", scene.id, item["id"], "/".join(missing))
    if not items:
        first = scene.items[0]
        raise SceneRejected(f"item {first['id']} has no {'/'.join(missing_bands(first))} asset")
    return items


def read_scl(scene: Scene, grid: SiteGrid, reader: Reader) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """SCL mosaic on the 20 m screening grid, and the items that actually cover it."""
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    layers, covering = [], []
    for item in usable_items(scene):
        win = reader.read_window(item["assets"][asset_key(item, "scl")]["href"], sgrid)
        if win is None:
            continue
        layer = warp_to_grid(win, sgrid, resampling=Resampling.nearest, nodata=0)
        if layer.any():
            layers.append(layer)
            covering.append(item)
    scl = mosaic(layers, 0) if layers else np.zeros(sgrid.shape, np.uint8)
    return scl, covering


def screen_scene(scene: Scene, aoi: Polygon, grid: SiteGrid, reader: Reader, *, min_coverage: float,
                 max_cloud_fraction: float) -> tuple[Screening, np.ndarray, list[dict[str, Any]]]:
    scl, covering = read_scl(scene, grid, reader)
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    result = screen(scl, sgrid.mask(aoi), min_coverage=min_coverage, max_cloud_fraction=max_cloud_fraction)
    return result, scl, covering


def load_ndvi(scene: Scene, items: list[dict[str, Any]], scl: np.ndarray, grid: SiteGrid, reader: Reader) -> np.ndarray:
    """NDVI on the site grid: per-item radiometry, bilinear 10 m → grid resolution, mosaic, clear pixels only."""
    red = mosaic([_band(i, "red", grid, reader) for i in items], np.nan)
    nir = mosaic([_band(i, "nir", grid, reader) for i in items], np.nan)
    out = ndvi(red, nir)
    out[~_clear_on_grid(scl, grid)] = np.nan
    return out


def _band(item: dict[str, Any], band: str, grid: SiteGrid, reader: Reader) -> np.ndarray:
    key = asset_key(item, band)
    win = reader.read_window(item["assets"][key]["href"], grid)
    if win is None:
        return np.full(grid.shape, np.nan, np.float32)
    scale, offset = reflectance_scaling(item, key)
    refl = Window2D(to_reflectance(win.data, scale, offset), win.transform, win.crs)
    return warp_to_grid(refl, grid, resampling=Resampling.bilinear, nodata=np.nan)


def _clear_on_grid(scl: np.ndarray, grid: SiteGrid) -> np.ndarray:
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    clear = clear_pixels(scl).astype(np.uint8) + 1  # 2 clear, 1 not clear, 0 outside
    win = Window2D(clear, sgrid.transform, sgrid.crs)
    return warp_to_grid(win, grid, resampling=Resampling.nearest, nodata=0) == 2


def load_scene(scene: Scene, aoi: Polygon, grid: SiteGrid, reader: Reader, *, min_coverage: float,
               max_cloud_fraction: float) -> tuple[Screening, Frame | None]:
    """Screen a scene over the AOI; read B04/B08 only when it passes."""
    result, scl, covering = screen_scene(scene, aoi, grid, reader, min_coverage=min_coverage,
                                         max_cloud_fraction=max_cloud_fraction)
    if not result.accepted:
        return result, None
    return result, Frame(scene, load_ndvi(scene, covering, scl, grid, reader), result)
