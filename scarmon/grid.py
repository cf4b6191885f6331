"""The site grid: the one raster grid every frame, mask and product of a site lives on.

Pure geometry. Fixed when a site's sequence is created: the UTM zone of the AOI centroid, an origin snapped to
SNAP_M so that Sentinel-2's 10 m and 20 m pixels fall exactly on it, and the site's resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon

SNAP_M = 20.0
"""Sentinel-2 tile origins are multiples of 20 m in their UTM zone; snapping there aligns 10 m and 20 m pixels."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing (lon, lat) (no Norway/Svalbard exceptions: S2 tiles ignore them too)."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class SiteGrid:
    epsg: int
    resolution: float
    x0: float  # west edge (m)
    y0: float  # north edge (m)
    width: int
    height: int

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.x0, 0.0, -self.resolution, self.y0)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the grid CRS."""
        return (self.x0, self.y0 - self.height * self.resolution, self.x0 + self.width * self.resolution, self.y0)

    @property
    def pixel_area_m2(self) -> float:
        return self.resolution * self.resolution

    def at_resolution(self, resolution: float) -> SiteGrid:
        """The same extent at another resolution (e.g. the 20 m screening grid); rounds the size up."""
        w, s, e, n = self.bounds
        return SiteGrid(
            self.epsg,
            resolution,
            self.x0,
            self.y0,
            math.ceil((e - w) / resolution - 1e-9),
            math.ceil((n - s) / resolution - 1e-9),
        )

    def xy_to_pixel(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple[Any, Any]:
        """Fractional (col, row) of grid-CRS coordinates."""
        return (np.asarray(x) - self.x0) / self.resolution, (self.y0 - np.asarray(y)) / self.resolution

    def lonlat_to_pixel(self, lon: float | np.ndarray, lat: float | np.ndarray) -> tuple[Any, Any]:
        x, y = _to_grid(self.epsg).transform(lon, lat)
        return self.xy_to_pixel(x, y)

    def pixel_to_lonlat(self, col: float | np.ndarray, row: float | np.ndarray) -> tuple[Any, Any]:
        x = self.x0 + (np.asarray(col) + 0.5) * self.resolution
        y = self.y0 - (np.asarray(row) + 0.5) * self.resolution
        return _to_lonlat(self.epsg).transform(x, y)

    def project(self, polygon_lonlat: Polygon) -> Polygon:
        """A lon/lat polygon in the grid CRS."""
        return _project(polygon_lonlat, self.epsg)

    def mask(self, polygon_lonlat: Polygon) -> np.ndarray:
        """Boolean array: pixels whose centre lies in the polygon."""
        from rasterio.features import geometry_mask

        inside: np.ndarray = geometry_mask(
            [self.project(polygon_lonlat)], out_shape=self.shape, transform=self.transform, invert=True
        )
        return inside

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiteGrid:
        return cls(
            int(d["epsg"]), float(d["resolution"]), float(d["x0"]), float(d["y0"]), int(d["width"]), int(d["height"])
        )


def site_grid(aoi_lonlat: Polygon, resolution: float, *, epsg: int | None = None) -> SiteGrid:
    """The grid of a site: AOI bounds in the UTM zone of its centroid, snapped outward to SNAP_M."""
    c = aoi_lonlat.centroid
    epsg = epsg or utm_epsg(c.x, c.y)
    w, s, e, n = _project(aoi_lonlat, epsg).bounds
    w, s = math.floor(w / SNAP_M) * SNAP_M, math.floor(s / SNAP_M) * SNAP_M
    e, n = math.ceil(e / SNAP_M) * SNAP_M, math.ceil(n / SNAP_M) * SNAP_M
    return SiteGrid(
        epsg, float(resolution), w, n, math.ceil((e - w) / resolution - 1e-9), math.ceil((n - s) / resolution - 1e-9)
    )


def _project(geom: Polygon, epsg: int) -> Polygon:
    return shapely.transform(geom, lambda x, y: _to_grid(epsg).transform(x, y), interleaved=False)


@lru_cache(maxsize=16)
def _to_grid(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=16)
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)
