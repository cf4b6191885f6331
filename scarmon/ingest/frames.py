"""Encoding frames for the store: NDVI as a COG on the site grid, the 8-bit video frame as PNG."""

from __future__ import annotations

import io

import numpy as np
import rasterio
import rasterio.shutil
from PIL import Image
from rasterio.io import MemoryFile

from scarmon.grid import SiteGrid

NDVI_SCALE = 1e-4
"""NDVI stored as int16 × 1e4: exact to 0.0001, half the bytes of float32; GIS tools read the scale tag."""
NDVI_NODATA = -32768


def encode_ndvi(ndvi: np.ndarray, grid: SiteGrid) -> bytes:
    """A COG (deflate, 256 px blocks) of NDVI; nodata marks pixels that were not clear (the validity mask)."""
    data = np.where(np.isfinite(ndvi), np.round(np.nan_to_num(ndvi) / NDVI_SCALE), NDVI_NODATA).astype(np.int16)
    return encode_cog(data, grid, nodata=NDVI_NODATA, scale=NDVI_SCALE, description="NDVI")


def encode_cog(data: np.ndarray, grid: SiteGrid, *, nodata: float | None, scale: float = 1.0,
               description: str | None = None) -> bytes:
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype=data.dtype.name,
                   crs=grid.crs, transform=grid.transform, nodata=nodata)
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
            tmp.scales = (scale,)
            if description:
                tmp.set_band_description(1, description)
        with mem.open() as src, MemoryFile() as out:
            rasterio.shutil.copy(src, out.name, driver="COG", compress="DEFLATE", blocksize=256,
                                 overview_resampling="nearest")
            return out.read()


def decode_ndvi(data: bytes) -> np.ndarray:
    """Float32 NDVI with NaN where not valid."""
    with MemoryFile(data) as mem, mem.open() as src:
        raw = src.read(1)
    out = raw.astype(np.float32) * np.float32(NDVI_SCALE)
    out[raw == NDVI_NODATA] = np.nan
    return out


def encode_png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))
