"""Tracking a site's stored sequence: only the frames that are new (or after a late insertion) are tracked,
resuming from the stored state of the frame before them, so the cost does not grow with the history."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scarmon import defaults
from scarmon.grid import SiteGrid
from scarmon.ingest.frames import decode_ndvi, decode_png, encode_cog
from scarmon.site import BoxPrompt, Prompt, Site
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store
from scarmon.store.sequence import FrameEntry, Manifest, load_manifest, mark_tracked
from scarmon.tracking.corrections import load_corrections
from scarmon.tracking.features import (
    Observation,
    confidence_flags,
    footprint_frames,
    measure,
    new_ground,
    same_season_change,
    scar_clear_fraction,
)
from scarmon.tracking.trackers import FrameData, Point, Sam2Tracker, Tracker, make_tracker

log = logging.getLogger(__name__)


@dataclass
class TrackReport:
    site_id: str
    tracker: str
    tracked: list[str] = field(default_factory=list)
    start_index: int = 0
    total_frames: int = 0
    warnings: list[str] = field(default_factory=list)  # what the user must act on (a prompt that found no scar)
    revised: list[str] = field(default_factory=list)  # earlier frames whose stored masks a seasonal revision corrected

    def summary(self) -> str:
        note = " (weight-free: no SAM 2 checkpoint configured)" if self.tracker == "knowledge" else ""
        warn = "".join(f"\n  WARNING: {w}" for w in self.warnings)
        if self.revised:
            warn += (
                f"\n  corrected {len(self.revised)} earlier frame(s): ground held in the dormant season stayed bare "
                f"into the growing season"
            )
        if not self.tracked:
            return (
                f"site {self.site_id}: nothing new to track ({self.total_frames} frames, {self.tracker} "
                f"tracker{note}){warn}"
            )
        return (
            f"site {self.site_id}: tracked {len(self.tracked)} frame(s) from #{self.start_index} of "
            f"{self.total_frames} with the {self.tracker} tracker{note}{warn}"
        )


def first_untracked(manifest: Manifest) -> int:
    """Index of the first frame to track: 1. dirty_from (a late, earlier frame); 2. after tracked_until; 3. all."""
    frames = manifest.frames
    if manifest.dirty_from:
        return next((i for i, f in enumerate(frames) if f.datetime >= manifest.dirty_from), len(frames))
    if manifest.tracked_until:
        return next((i for i, f in enumerate(frames) if f.datetime > manifest.tracked_until), len(frames))
    return 0


def prompts_by_frame(
    prompts: Sequence[Prompt],
    frames: Sequence[FrameEntry],
    grid: SiteGrid,
    *,
    boxes: Sequence[BoxPrompt] = (),
    to_first: bool = False,
) -> dict[int, list[Point]]:
    """Prompts in pixels, keyed by the first frame on or after their date. A box becomes two corner points
    labelled 2 (top-left) and 3 (bottom-right), as SAM 2 encodes boxes. Both trackers start where the prompts are
    and track backward from there; `to_first` (the knowledge tracker's old way, kept for the benchmark's "before"
    column) moves the first prompted frame's prompts onto frame 0, which puts a prompt dated after a new landslide
    onto ground that was still intact. A prompt dated after the last frame waits for a frame on or after its date."""
    out: dict[int, list[Point]] = {}
    dates = [f.date for f in frames]

    def frame_of(day: dt.date) -> int | None:
        return next((k for k, d in enumerate(dates) if d >= day.isoformat()), None)

    for p in prompts:
        if (i := frame_of(p.date)) is None:
            log.info(
                "prompt of %s waits for a frame on or after its date (last frame %s)",
                p.date,
                dates[-1] if dates else None,
            )
        else:
            col, row = grid.lonlat_to_pixel(p.lon, p.lat)
            out.setdefault(i, []).append((float(col), float(row), p.label))
    for b in boxes:
        if (i := frame_of(b.date)) is not None:
            w, s, e, n = b.box
            cols, rows = grid.lonlat_to_pixel(np.array([w, e, w, e]), np.array([n, n, s, s]))
            out.setdefault(i, []).extend(
                [(float(min(cols)), float(min(rows)), 2), (float(max(cols)), float(max(rows)), 3)]
            )
    if to_first and out and (first := min(out)) > 0:
        out[0] = out.pop(first)
    return out


def track_site(
    site: Site,
    store: Store,
    *,
    tracker: Tracker | None = None,
    from_start: bool = False,
    progress: Callable[[int], object] | None = None,
    on_frames: Callable[[int], object] | None = None,
) -> TrackReport:
    """Track the frames not tracked yet, window by window, resuming from the stored state before them."""
    tracker = tracker or make_tracker(site.ndvi_threshold)
    manifest, _ = load_manifest(store, site.id)
    report = TrackReport(site.id, tracker.name, total_frames=len(manifest.frames))
    if not manifest.frames:
        return report
    grid = manifest.site_grid
    frames = manifest.frames
    start, resume = _resume_point(store, site.id, tracker, manifest, 0 if from_start else first_untracked(manifest))
    report.start_index = start
    if on_frames:
        on_frames(len(frames) - start)
    prompts = prompts_by_frame(site.prompts, frames, grid, boxes=site.boxes)
    corrections = prompts_by_frame(load_corrections(store, site.id), frames, grid, to_first=False)
    if isinstance(tracker, Sam2Tracker):
        tracker.keep_states_from = max(len(frames) - defaults.KEEP_RECENT_STATES, 0)  # others are pruned below
        if resume is not None and (changed := tracker.first_changed(resume, prompts, corrections)) is not None:
            log.warning(
                "site %s: prompts or corrections on frame #%d (%s) changed: re-tracking from it",
                site.id,
                changed,
                frames[changed].date,
            )
            start, resume = _resume_point(store, site.id, tracker, manifest, changed)
            report.start_index = start
    if resume is None and not prompts:  # e.g. the only prompt is dated after the newest frame
        # Tracked now, these frames would have no scar to follow, and differ from a later run that has the prompt.
        log.info(
            "site %s: no site prompt on or before the newest frame (%s): nothing to track yet",
            site.id,
            frames[-1].date,
        )
        return report
    measured: dict[str, dict[str, Any]] = {}  # per tracked frame, measured while its mask and NDVI are in memory
    prev = read_mask(store, keys.mask(site.id, frames[start - 1])) if start > 0 else None
    lo = start
    while lo < len(frames):
        hi = min(lo + tracker.window, len(frames))
        if resume is None and prompts:  # a fresh start must reach the first prompted frame (SAM 2 tracks back)
            hi = max(hi, min(prompts) + 1)
        window = [_frame_data(store, i, frames[i]) for i in range(lo, hi)]
        lo = hi
        masks, states = tracker.run(window, prompts, corrections, resume=resume)
        notes: dict[int, str] = getattr(tracker, "notes", {})  # the knowledge tracker says why it held new area
        revisions: dict[int, np.ndarray] = getattr(tracker, "revisions", {})  # ...and what the season confirmed
        report.warnings.extend(getattr(tracker, "warnings", []))
        for fd, mask, state in zip(window, masks, states, strict=True):
            frame = frames[fd.index]
            if fd.index in revisions:
                prev = _revise(store, site.id, frames, grid, fd.index, revisions[fd.index], measured, report)
            store.put(
                keys.mask(site.id, frame), encode_cog(mask.astype(np.uint8), grid, nodata=None, description="scar")
            )
            store.put(keys.tracker_state(site.id, tracker.name, frame), state)
            measured[frame.scene_id] = {
                **_measure(frames, fd.index, mask, prev, grid, np.isfinite(fd.ndvi)),
                "tracker_note": notes.get(fd.index, ""),
            }
            prev = mask
            report.tracked.append(frame.scene_id)
            if progress:
                progress(1)
        resume = states[-1] or resume
    store.put(keys.tracker_identity(site.id), json.dumps(tracker.identity(), sort_keys=True).encode())
    _prune_states(store, site.id, tracker.name, frames, since=start)
    if report.tracked:
        write_series(store, site.id, manifest, grid, measured)
    mark_tracked(store, site.id, tracked_until=frames[-1].datetime, clear_dirty=True, based_on=manifest)
    return report


CORRECTED = "corrected on "  # how a revision's note on an earlier frame begins (not a reason for low confidence)


def _revise(
    store: Store,
    site_id: str,
    frames: Sequence[FrameEntry],
    grid: SiteGrid,
    i: int,
    revision: np.ndarray,
    measured: dict[str, dict[str, Any]],
    report: TrackReport,
) -> np.ndarray:
    """Apply a seasonal revision confirmed on frame i: a pixel with revision value a was scar on the a frames before
    i too, so it is ORed into their stored masks; those rows (and the row after each, whose growth is measured
    against it) are measured again into `measured`, and a corrected frame's note says when and why. The tracker
    states are not touched (they stay causal). Cost: the frames of one hold, at most one dormant season (see
    knowledge.observe_held). Returns frame i-1's mask as corrected, the one frame i is measured against."""
    depth = int(revision.max())
    note = f"{CORRECTED}{frames[i].date}: seasonal hold confirmed by the growing season"
    old_rows: dict[str, dict[str, Any]] | None = None
    j0 = i - depth
    prev = read_mask(store, keys.mask(site_id, frames[j0 - 1])) if j0 > 0 else None
    prev_changed = False
    for j in range(j0, i):
        frame = frames[j]
        mask = read_mask(store, keys.mask(site_id, frame))
        revised = mask | (revision >= i - j)
        changed = not np.array_equal(revised, mask)
        if changed:
            store.put(
                keys.mask(site_id, frame), encode_cog(revised.astype(np.uint8), grid, nodata=None, description="scar")
            )
            report.revised.append(frame.scene_id)
        if changed or prev_changed:
            if frame.scene_id in measured:
                told = str(measured[frame.scene_id].get("tracker_note") or "")
            else:
                old_rows = old_rows if old_rows is not None else {r["scene_id"]: r for r in read_series(store, site_id)}
                told = str(old_rows.get(frame.scene_id, {}).get("tracker_note") or "")
            if changed and note not in told.split("; "):
                told = f"{told}; {note}" if told else note
            valid = np.isfinite(decode_ndvi(store.get(frame.objects["ndvi"])))
            measured[frame.scene_id] = {**_measure(frames, j, revised, prev, grid, valid), "tracker_note": told}
        prev, prev_changed = revised, changed
    assert prev is not None  # depth >= 1: frame i-1 was visited
    return prev


def revised_since(observations: Sequence[Observation], last: str) -> str | None:
    """Date of the earliest row on or before `last` (the last date a reader stepped, e.g. the alert state) that a
    seasonal revision confirmed after `last` corrected, or None: whether what a reader saw has changed since."""
    for o in observations:
        if o.date > last:
            return None
        for part in (o.tracker_note or "").split("; "):
            if part.startswith(CORRECTED) and part[len(CORRECTED) : len(CORRECTED) + 10] > last:
                return o.date
    return None


def _hold_reasons(note: str) -> str:
    """The tracker note without revision notes: what made the tracker doubt its own frame."""
    return "; ".join(part for part in note.split("; ") if part and not part.startswith(CORRECTED))


def _frame_data(store: Store, index: int, frame: FrameEntry) -> FrameData:
    return FrameData(
        index, decode_ndvi(store.get(frame.objects["ndvi"])), decode_png(store.get(frame.objects["video"]))
    )


def _resume_point(
    store: Store, site_id: str, tracker: Tracker, manifest: Manifest, start: int
) -> tuple[int, bytes | None]:
    """Where to start and the state to start from: the nearest earlier frame with a stored state of this very
    tracker (states of another tracker or other weights cannot be resumed from: then from the first frame)."""
    try:
        stored = json.loads(store.get(keys.tracker_identity(site_id)))
    except KeyMissing:
        stored = None
    if stored != tracker.identity():
        if stored is not None:
            log.warning(
                "site %s: tracker changed (%s -> %s): tracking from the first frame",
                site_id,
                stored.get("name"),
                tracker.name,
            )
        return 0, None
    for i in range(start - 1, -1, -1):
        try:
            state = store.get(keys.tracker_state(site_id, tracker.name, manifest.frames[i]))
        except KeyMissing:
            continue
        if state:
            return i + 1, state
    return 0, None


def _prune_states(store: Store, site_id: str, tracker: str, frames: Sequence[FrameEntry], *, since: int) -> None:
    """Keep the states of the last KEEP_RECENT_STATES frames and of every STATE_EVERY-th one: re-tracking after a
    correction or a late frame then starts at most STATE_EVERY frames back, and storage stays bounded. Only frames
    that this run pushed out of the recent window are visited, so a tick costs the same whatever the history."""
    stop = max(len(frames) - defaults.KEEP_RECENT_STATES, 0)
    for i in range(max(since - defaults.KEEP_RECENT_STATES, 0), stop):
        if (i + 1) % defaults.STATE_EVERY:
            store.delete(keys.tracker_state(site_id, tracker, frames[i]))


def read_mask(store: Store, key: str) -> np.ndarray:
    from rasterio.io import MemoryFile

    with MemoryFile(store.get(key)) as mem, mem.open() as src:
        return np.asarray(src.read(1).astype(bool))


def _measure(
    frames: Sequence[FrameEntry],
    i: int,
    mask: np.ndarray,
    prev: np.ndarray | None,
    grid: SiteGrid,
    valid: np.ndarray | None,
) -> dict[str, Any]:
    days = (dt.date.fromisoformat(frames[i].date) - dt.date.fromisoformat(frames[i - 1].date)).days if i else None
    m = measure(mask, prev, pixel_m=grid.resolution, days=days)
    return {**m, "scar_clear_fraction": scar_clear_fraction(valid, mask) if valid is not None else None}


def write_series(
    store: Store, site_id: str, manifest: Manifest, grid: SiteGrid, measured: dict[str, dict[str, Any]]
) -> list[Observation]:
    """The series with the rows of the frames just tracked (`measured`), older rows kept as stored. A frame in
    neither (a series lost or written by an older version) is measured again from the stored masks."""
    old = {r["scene_id"]: r for r in read_series(store, site_id)}
    frames = manifest.frames
    rows: list[Observation] = []
    for i, frame in enumerate(frames):
        if frame.scene_id not in measured and frame.scene_id in old:
            rows.append(_from_row(old[frame.scene_id]))
            continue
        m = measured.get(frame.scene_id)
        if m is None:
            prev = read_mask(store, keys.mask(site_id, frames[i - 1])) if i else None
            m = _measure(frames, i, read_mask(store, keys.mask(site_id, frame)), prev, grid, None)
        # observed share: SCL's clear share less the cloud and snow the spectral test masked at ingestion
        rows.append(Observation(frame.date, frame.scene_id, clear_fraction=round(frame.observed_fraction, 4), **m))
    dates, areas = [r.date for r in rows], [r.area_m2 for r in rows]
    flags = confidence_flags(
        areas,
        [r.clear_fraction for r in rows],
        scar_clear=[r.scar_clear_fraction for r in rows],
        tracker=[_hold_reasons(r.tracker_note or "") for r in rows],
    )
    rows = [
        replace(
            r, same_season_change_pct=same_season_change(dates, areas, i), low_confidence=f, low_confidence_reason=why
        )
        for i, (r, (f, why)) in enumerate(zip(rows, flags, strict=True))
    ]
    rows = _with_ground(store, site_id, frames, rows, grid.resolution, fresh=set(measured))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(Observation.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(r.to_csv_row() for r in rows)
    store.put(keys.series_csv(site_id), buf.getvalue().encode(), content_type="text/csv")
    store.put(
        keys.series_json(site_id),
        json.dumps([r.to_row() for r in rows], indent=1).encode(),
        content_type="application/json",
    )
    return rows


def _with_ground(
    store: Store,
    site_id: str,
    frames: Sequence[FrameEntry],
    rows: list[Observation],
    pixel_m: float,
    *,
    fresh: set[str],
) -> list[Observation]:
    """New and lost ground of each frame against its footprint (features.footprint_frames): for the frames just
    tracked, and for older rows without it that have a footprint (a series written before this column existed).
    Masks are read from the store once each, packed, and dropped once older than any footprint can reach."""
    dates = [r.date for r in rows]
    usable = [not r.low_confidence for r in rows]
    reach = max(defaults.ALERT_GROUND_LAGS_DAYS) + defaults.ALERT_GROUND_TOLERANCE_DAYS
    cache: dict[int, tuple[np.ndarray, tuple[int, ...]]] = {}

    def mask_of(j: int) -> np.ndarray:
        if j not in cache:
            m = read_mask(store, keys.mask(site_id, frames[j]))
            cache[j] = np.packbits(m), m.shape
        packed, shape = cache[j]
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    out = []
    for i, r in enumerate(rows):
        refs = footprint_frames(dates, usable, i)
        if refs and (r.scene_id in fresh or r.new_ground_m2 is None):
            footprint = np.logical_or.reduce([mask_of(j) for j in refs])
            g = new_ground(mask_of(i), footprint, pixel_m=pixel_m)
            r = replace(
                r,
                new_ground_m2=g.get("new_ground_m2"),
                lost_ground_m2=g.get("lost_ground_m2"),
                new_ground_azimuth_deg=g.get("new_ground_azimuth_deg"),
                new_ground_distance_m=g.get("new_ground_distance_m"),
            )
            day = dt.date.fromisoformat(r.date)
            for j in [j for j in cache if (day - dt.date.fromisoformat(dates[j])).days > reach]:
                del cache[j]
        out.append(r)
    return out


def read_series(store: Store, site_id: str) -> list[dict[str, Any]]:
    """The stored series rows (series.json), oldest first; [] before the first tracked frame."""
    try:
        rows: list[dict[str, Any]] = json.loads(store.get(keys.series_json(site_id)))
    except KeyMissing:
        return []
    return rows


def read_observations(store: Store, site_id: str) -> list[Observation]:
    """The stored series as typed observations (what the alert rules step through)."""
    return [_from_row(r) for r in read_series(store, site_id)]


def _from_row(row: dict[str, Any]) -> Observation:
    fields: dict[str, Any] = {k: row.get(k) for k in Observation.__dataclass_fields__ if k in row}
    return Observation(**fields)
