"""Reading COG windows: the I/O seam between catalogs' assets and the pure raster logic.

A `Reader` returns the native-resolution window of an asset that covers a grid's bounds (plus a margin for
bilinear kernels), never the whole 110 km tile. GDAL reads only the COG blocks that window touches. The
default reader counts the bytes it reads from local files, so benchmarks can compare them with the floor.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from scarmon import defaults
from scarmon.grid import SiteGrid

MARGIN_PX = 2
"""Source pixels read beyond the grid bounds: bilinear needs one neighbour; one more absorbs reprojection curvature."""

GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # never list a remote folder to find sidecars
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MAX_RETRY": "5",  # 429/5xx from blob storage are routine
    "GDAL_HTTP_RETRY_DELAY": "2",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "FALSE",
}


class ReadError(RuntimeError):
    """An asset could not be read (missing, corrupt, truncated, unreachable); names the href."""


@dataclass(frozen=True)
class Window2D:
    """A window of an asset at its native resolution, with the georeferencing needed to warp it."""

    data: np.ndarray
    transform: Affine
    crs: Any


class Reader(Protocol):
    def read_window(self, href: str, grid: SiteGrid) -> Window2D | None:
        """The window covering `grid`, or None when the asset does not overlap it."""
        ...


@dataclass
class ReadStats:
    bytes_read: int = 0
    files_opened: int = 0
    by_href: dict[str, int] = field(default_factory=dict)


class RasterioReader:
    """Reads with rasterio/GDAL; `sign` turns an href into a readable URL (Planetary Computer SAS tokens).

    Thread-safe: one reader serves the whole ingestion pool. Signing failures share one time budget per reader
    (`give_up_s`, a run): a call is abandoned once it has taken the rest of the budget (plus SIGN_GRACE_S), and
    once the signer has failed for that long in total, every href that needs signing fails at once with a
    ReadError (the scene stays pending) instead of stalling each scene on the signer's retries.
    """

    def __init__(self, sign: Callable[[str], str] | None = None, *, give_up_s: float | None = None):
        self.sign = sign or sign_href
        self.stats = ReadStats()
        self.give_up_s = defaults.SIGN_GIVE_UP_S if give_up_s is None else give_up_s
        self._sign_failed_s = 0.0
        self._lock = threading.Lock()

    def read_window(self, href: str, grid: SiteGrid) -> Window2D | None:
        try:
            with rasterio.Env(**GDAL_ENV), self._open(href) as src:
                window = source_window(src.crs, src.transform, src.width, src.height, grid)
                if window is None:
                    return None
                data = src.read(1, window=window)
                return Window2D(data, src.window_transform(window), src.crs)
        except (rasterio.RasterioIOError, rasterio.errors.RasterioError, OSError, ValueError) as exc:
            raise ReadError(f"cannot read {href}: {exc}") from exc

    def _open(self, href: str) -> Any:
        if urlparse(href).scheme in ("", "file"):
            path = href.removeprefix("file://")
            with self._lock:
                self.stats.files_opened += 1
            return rasterio.open(path, opener=lambda p, mode="rb": _CountingFile(open(p, mode), self, href))
        return rasterio.open(self._signed(href))

    def _signed(self, href: str) -> str:
        with self._lock:
            spent = self._sign_failed_s
        if spent > self.give_up_s:
            raise ReadError(
                f"cannot sign {href}: signing failed for {spent:.0f} s in this run; gave up until the next run"
            )
        t0 = time.monotonic()
        wait = max(self.give_up_s - spent, 0.0) + SIGN_GRACE_S
        future = _sign_pool().submit(self.sign, href)
        try:
            return future.result(timeout=wait)
        except FutureTimeout as exc:  # a signer retrying for minutes: stop waiting, it finishes in the background
            with self._lock:
                self._sign_failed_s += time.monotonic() - t0
            raise ReadError(f"cannot sign {href}: no answer within {wait:.0f} s") from exc
        except Exception as exc:  # any signer failure (network, HTTP, token service) is the same to a read
            with self._lock:
                self._sign_failed_s += time.monotonic() - t0
            raise ReadError(f"cannot sign {href}: {exc}") from exc

    def _count(self, href: str, n: int) -> None:
        with self._lock:
            self.stats.bytes_read += n
            self.stats.by_href[href] = self.stats.by_href.get(href, 0) + n


class _CountingFile:
    """A file object that tells its reader how many bytes GDAL took from it."""

    def __init__(self, f: Any, reader: RasterioReader, href: str):
        self._f, self._reader, self._href = f, reader, href

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._f.read(size)
        self._reader._count(self._href, len(data))
        return data

    def readinto(self, buf: Any) -> int:
        n: int | None = self._f.readinto(buf)
        self._reader._count(self._href, n or 0)
        return n or 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def source_window(crs: Any, transform: Affine, width: int, height: int, grid: SiteGrid) -> Window | None:
    """Pure: the pixel window of a raster that covers the grid's bounds plus MARGIN_PX, clipped to the raster."""
    left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
    inv = ~transform
    cols, rows = zip(*(inv @ (x, y) for x in (left, right) for y in (bottom, top)), strict=True)
    c0 = max(math.floor(min(cols)) - MARGIN_PX, 0)
    r0 = max(math.floor(min(rows)) - MARGIN_PX, 0)
    c1 = min(math.ceil(max(cols)) + MARGIN_PX, width)
    r1 = min(math.ceil(max(rows)) + MARGIN_PX, height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


SIGN_GRACE_S = 1.0
"""A signing call may run this much past the run's remaining signing budget before it is abandoned."""

_SIGN_POOL: ThreadPoolExecutor | None = None
_SIGN_POOL_LOCK = threading.Lock()


def _sign_pool() -> ThreadPoolExecutor:
    """Threads that run signers, so a signer stuck in its own retries cannot hold a read longer than the budget."""
    global _SIGN_POOL
    with _SIGN_POOL_LOCK:
        if _SIGN_POOL is None:
            _SIGN_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scarmon-sign")
        return _SIGN_POOL


def sign_href(href: str) -> str:
    """Planetary Computer blob URLs need a SAS token; re-sign from the unsigned href (a signed one is left as is)."""
    host = urlparse(href).hostname or ""
    if host.endswith(".blob.core.windows.net"):
        import planetary_computer

        return str(planetary_computer.sign(href.split("?", 1)[0]))
    return href
