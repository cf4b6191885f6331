"""Tracking a site's stored sequence: only the frames that are new (or after a late insertion) are tracked,
resuming from the stored state of the frame before them, so the cost does not grow with the history."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from scarmon.features import Observation, confidence_flags, measure, same_season_change
from scarmon.frames import decode_ndvi, encode_cog
from scarmon.grid import SiteGrid
from scarmon.sequence import FrameEntry, Manifest, load_manifest, mark_tracked
from scarmon.site import Site
from scarmon.store import KeyMissing, Store
from scarmon.tracking.knowledge import KnowledgeParams, KnowledgeState, decode_state, encode_state, knowledge_step

log = logging.getLogger(__name__)

TRACKER_NAME = "knowledge"


@dataclass
class TrackReport:
    site_id: str
    tracker: str
    tracked: list[str] = field(default_factory=list)
    start_index: int = 0
    total_frames: int = 0

    def summary(self) -> str:
        if not self.tracked:
            return f"site {self.site_id}: nothing new to track ({self.total_frames} frames, tracker {self.tracker})"
        return (f"site {self.site_id}: tracked {len(self.tracked)} frame(s) from #{self.start_index} of "
                f"{self.total_frames} with the {self.tracker} tracker (weight-free: no SAM 2 checkpoint configured)")


def mask_key(site_id: str, frame: FrameEntry) -> str:
    return f"{site_id}/masks/{frame.date}_{frame.scene_id}.tif"


def state_key(site_id: str, frame: FrameEntry) -> str:
    return f"{site_id}/tracking/{TRACKER_NAME}/{frame.date}_{frame.scene_id}.npz"


def series_key(site_id: str) -> str:
    return f"{site_id}/series.csv"


def first_untracked(manifest: Manifest) -> int:
    """Index of the first frame to track: 1. dirty_from (a late, earlier frame); 2. after tracked_until; 3. all."""
    frames = manifest.frames
    if manifest.dirty_from:
        return next(i for i, f in enumerate(frames) if f.datetime >= manifest.dirty_from)
    if manifest.tracked_until:
        return next((i for i, f in enumerate(frames) if f.datetime > manifest.tracked_until), len(frames))
    return 0


def prompts_by_frame(site: Site, frames: tuple[FrameEntry, ...], grid: SiteGrid) -> dict[int, list[tuple[float, float, int]]]:
    """Each prompt goes to the first frame on or after its date (the frame it was clicked on, for corrections)."""
    out: dict[int, list[tuple[float, float, int]]] = {}
    dates = [f.date for f in frames]
    for p in site.prompts:
        i = next((k for k, d in enumerate(dates) if d >= p.date.isoformat()), None)
        if i is None:
            continue
        col, row = grid.lonlat_to_pixel(p.lon, p.lat)
        out.setdefault(i, []).append((float(col), float(row), p.label))
    if out and min(out) > 0:  # prompts dated after the first frame still start the video (paper: frame 0)
        out.setdefault(0, []).extend(out.pop(min(out)))
    return out


def track_site(site: Site, store: Store, *, progress: Callable[[int], object] | None = None,
               on_frames: Callable[[int], object] | None = None) -> TrackReport:
    manifest, _ = load_manifest(store, site.id)
    report = TrackReport(site.id, TRACKER_NAME, total_frames=len(manifest.frames))
    if not manifest.frames:
        return report
    grid = SiteGrid.from_dict(manifest.grid)
    start = first_untracked(manifest)
    report.start_index = start
    todo = manifest.frames[start:]
    if on_frames:
        on_frames(len(todo))
    state = _state_before(store, site.id, manifest, start)
    prompts = prompts_by_frame(site, manifest.frames, grid)
    params = KnowledgeParams(threshold=site.ndvi_threshold)
    for i, frame in enumerate(todo, start):
        ndvi = decode_ndvi(store.get(frame.objects["ndvi"]))
        mask, state = knowledge_step(state, ndvi=ndvi, prompts=prompts.get(i, []), params=params)
        store.put(mask_key(site.id, frame), encode_cog(mask.astype(np.uint8), grid, nodata=None, description="scar"))
        store.put(state_key(site.id, frame), encode_state(state))
        report.tracked.append(frame.scene_id)
        if progress:
            progress(1)
    write_series(store, site.id, manifest, grid, start)
    mark_tracked(store, site.id, tracked_until=manifest.frames[-1].datetime, clear_dirty=True, based_on=manifest)
    return report


def _state_before(store: Store, site_id: str, manifest: Manifest, start: int) -> KnowledgeState:
    if start == 0:
        return KnowledgeState()
    key = state_key(site_id, manifest.frames[start - 1])
    try:
        return decode_state(store.get(key))
    except KeyMissing:
        raise RuntimeError(f"tracking state {key} is missing: re-track the site from its first frame "
                           "(`scarmon track --site FILE --from-start`)") from None


def read_mask(store: Store, key: str) -> np.ndarray:
    from rasterio.io import MemoryFile

    with MemoryFile(store.get(key)) as mem, mem.open() as src:
        return src.read(1).astype(bool)


def write_series(store: Store, site_id: str, manifest: Manifest, grid: SiteGrid, start: int) -> list[Observation]:
    """Recompute rows from `start` (reading the masks of new frames and the one before), keep older rows."""
    old = {r["scene_id"]: r for r in read_series(store, site_id)}
    frames = manifest.frames
    rows: list[Observation] = []
    prev = read_mask(store, mask_key(site_id, frames[start - 1])) if start > 0 else None
    for i, frame in enumerate(frames):
        if i < start and frame.scene_id in old:
            rows.append(_from_row(old[frame.scene_id]))
            continue
        mask = read_mask(store, mask_key(site_id, frame))
        days = (dt.date.fromisoformat(frame.date) - dt.date.fromisoformat(frames[i - 1].date)).days if i else None
        m = measure(mask, prev, pixel_m=grid.resolution, days=days)
        rows.append(Observation(frame.date, frame.scene_id, clear_fraction=frame.clear_fraction, **m))
        prev = mask
    dates, areas = [r.date for r in rows], [r.area_m2 for r in rows]
    flags = confidence_flags(areas, [r.clear_fraction for r in rows])
    rows = [replace(r, same_season_change_pct=same_season_change(dates, areas, i), low_confidence=f, low_confidence_reason=why)
            for i, (r, (f, why)) in enumerate(zip(rows, flags))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(Observation.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(r.to_row() for r in rows)
    store.put(series_key(site_id), buf.getvalue().encode(), content_type="text/csv")
    store.put(f"{site_id}/series.json", json.dumps([r.to_row() for r in rows], indent=1).encode(),
              content_type="application/json")
    return rows


def read_series(store: Store, site_id: str) -> list[dict]:
    try:
        return json.loads(store.get(f"{site_id}/series.json"))
    except KeyMissing:
        return []


def _from_row(row: dict) -> Observation:
    return Observation(**{k: row.get(k) for k in Observation.__dataclass_fields__ if k in row})
