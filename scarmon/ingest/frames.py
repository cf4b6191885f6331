"""Encoding frames for the store: NDVI as a COG on the site grid, the 8-bit video frame as PNG.

Both encodings are lossless and fast: stored values do not depend on the compression settings, only sizes and
time do. COG: written in one pass by GDAL's COG driver (no intermediate GeoTIFF copy, no overviews), DEFLATE
level 1 with the horizontal-differencing predictor (on NDVI frames: ~25 % fewer bytes than level 6 without it, and
a third of the time). PNG: zlib level 1 (~5× faster than PIL's default level 6 on 8-bit frames, ~15 % larger).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from rasterio.io import MemoryFile

from scarmon.grid import SiteGrid

NDVI_SCALE = 1e-4
"""NDVI stored as int16 × 1e4: exact to 0.0001, half the bytes of float32; GIS tools read the scale tag."""
NDVI_NODATA = -32768
COG_DEFLATE_LEVEL = 1
"""zlib level of the COGs: level 1 with the predictor is both faster and smaller than level 6 without it."""
PNG_ZLIB_LEVEL = 1
"""zlib level of the video PNGs: the 8-bit frames are written once per scene and read by the tracker only."""


def encode_ndvi(ndvi: np.ndarray, grid: SiteGrid) -> bytes:
    """A COG (deflate, 256 px blocks) of NDVI; nodata marks pixels that were not clear (the validity mask)."""
    data = np.where(np.isfinite(ndvi), np.round(np.nan_to_num(ndvi) / NDVI_SCALE), NDVI_NODATA).astype(np.int16)
    return encode_cog(data, grid, nodata=NDVI_NODATA, scale=NDVI_SCALE, description="NDVI")


COG_OPTIONS = {"compress": "DEFLATE", "level": COG_DEFLATE_LEVEL, "predictor": 2, "blocksize": 256, "overviews": "NONE"}
"""No overviews: a site frame is 1-3 k pixels a side, read whole by the tracker and products; building them made
the COG driver go through a temporary GTiff and tripled the encoding time."""


def encode_cog(
    data: np.ndarray, grid: SiteGrid, *, nodata: float | None, scale: float = 1.0, description: str | None = None
) -> bytes:
    """A single-band tiled COG of `data` on the grid (no overviews, see COG_OPTIONS)."""
    with MemoryFile() as out:
        with out.open(
            driver="COG",
            width=grid.width,
            height=grid.height,
            count=1,
            dtype=data.dtype.name,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            **COG_OPTIONS,
        ) as dst:
            dst.write(data, 1)
            dst.scales = (scale,)
            if description:
                dst.set_band_description(1, description)
        return bytes(out.read())


def decode_ndvi(data: bytes) -> np.ndarray:
    """Float32 NDVI with NaN where not valid."""
    with MemoryFile(data) as mem, mem.open() as src:
        raw: np.ndarray = src.read(1)
    out: np.ndarray = raw.astype(np.float32) * np.float32(NDVI_SCALE)
    out[raw == NDVI_NODATA] = np.nan
    return out


def encode_png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG", optimize=False, compress_level=PNG_ZLIB_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8)
