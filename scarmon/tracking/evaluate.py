"""Evaluation against truth masks: IoU, precision and recall per frame (paper Eqs. 2–4)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject

from scarmon.grid import SiteGrid
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import Store


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(IoU, precision, recall); an empty prediction of an empty truth is perfect."""
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    return iou, precision, recall


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
        reproject(
            rasterio.band(src, 1),
            dst,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=Resampling.nearest,
            dst_nodata=0,
        )
    return dst > 0


def evaluate_site(site: Site, store: Store, truth_dir: Path) -> dict[str, Any]:
    """Scores of every stored mask that has a truth mask of the same date (inside the AOI)."""
    from scarmon.store.sequence import load_manifest
    from scarmon.tracking.pipeline import read_mask

    manifest, _ = load_manifest(store, site.id)
    if not manifest.frames:
        raise ValueError(f"site {site.id} has no frames in {store.uri}: ingest and track first")
    grid = manifest.site_grid
    aoi = grid.mask(site.polygon)
    truths = truth_files(truth_dir)
    rows = []
    for frame in manifest.frames:
        if frame.date not in truths:
            continue
        pred = read_mask(store, keys.mask(site.id, frame)) & aoi
        iou, p, r = scores(pred, truth_on_grid(truths[frame.date], grid) & aoi)
        rows.append({"date": frame.date, "scene_id": frame.scene_id, "iou": iou, "precision": p, "recall": r})
    if not rows:
        raise ValueError(
            f"no truth mask in {truth_dir} matches a frame date of site {site.id} "
            f"(frames {manifest.frames[0].date}..{manifest.frames[-1].date}; name files YYYY-MM-DD*.tif)"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("iou", "precision", "recall")}
    return {"site": site.id, "frames": rows, "mean": mean}
