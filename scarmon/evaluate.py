"""Evaluation against truth masks: IoU, precision and recall per frame (paper Eqs. 2–4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject

from scarmon.grid import SiteGrid


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(IoU, precision, recall); an empty prediction of an empty truth is perfect."""
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    return iou, precision, recall


@dataclass(frozen=True)
class FrameScore:
    date: str
    iou: float
    precision: float
    recall: float


DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def truth_files(folder: Path) -> dict[str, Path]:
    """GeoTIFFs named by date (YYYY-MM-DD anywhere in the name)."""
    out = {}
    for path in sorted(folder.iterdir()):
        m = DATE.search(path.name)
        if m and path.suffix.lower() in (".tif", ".tiff"):
            out[m.group(1)] = path
    return out


def truth_on_grid(path: Path, grid: SiteGrid) -> np.ndarray:
    """A truth mask on any grid/CRS, reprojected (nearest) onto the site grid; non-zero = scar."""
    dst = np.zeros(grid.shape, np.uint8)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), dst, dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=Resampling.nearest, dst_nodata=0)
    return dst > 0
