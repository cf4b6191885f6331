"""Ingestion: discover → screen → load → append, for one site. Each stage is a plain function; this module only
orchestrates them and reports what happened."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

from scarmon import defaults
from scarmon.ingest.discovery import Catalog, parse_datetime
from scarmon.ingest.frames import encode_ndvi, encode_png
from scarmon.grid import SiteGrid, site_grid
from scarmon.ingest.loading import Frame, SceneRejected, load_scene
from scarmon.ingest.radiometry import video_frame
from scarmon.ingest.reader import RasterioReader, ReadError, Reader
from scarmon.ingest.scenes import Scene, group_scenes
from scarmon.ingest.screening import Screening
from scarmon.store.sequence import FrameEntry, Manifest, Rejection, append, load_manifest
from scarmon.site import Site
from scarmon.store.backends import Store

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    site_id: str
    found: int = 0                                   # scenes in the search window
    already_present: int = 0                         # frames or rejections stored before
    appended: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)       # (scene id, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)        # read failures, retried next run
    dirty_from: str | None = None

    def summary(self) -> str:
        lines = [f"site {self.site_id}: {self.found} scene(s) found, {len(self.appended)} appended, "
                 f"{len(self.rejected)} rejected, {self.already_present} already present, {len(self.skipped)} skipped"]
        lines += [f"  rejected {sid}: {why}" for sid, why in self.rejected]
        lines += [f"  skipped  {sid}: {why} (will be retried next run)" for sid, why in self.skipped]
        if self.dirty_from:
            lines.append(f"  an earlier scene arrived late: tracking must re-run from {self.dirty_from}")
        return "\n".join(lines)


def search_window(site: Site, manifest: Manifest, start: dt.date | None, end: dt.date | None) -> tuple[dt.datetime, dt.datetime]:
    """[start, end] of the catalog search.

    1. An explicit --start wins; 2. else the cursor minus LATE_PUBLICATION_DAYS (late scenes), reaching further
    back to any scene that could not be read before; 3. else the site's start.
    """
    end_dt = _utc(end + dt.timedelta(days=1)) if end else dt.datetime.now(dt.timezone.utc)
    if start:
        return _utc(start), end_dt
    if cursor := manifest.cursor():
        back = parse_datetime(cursor) - dt.timedelta(days=defaults.LATE_PUBLICATION_DAYS)
        back = min([back, *(parse_datetime(r.datetime) for r in manifest.pending())])
        return max(back, _utc(site.start)), end_dt
    return _utc(site.start), end_dt


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def frame_objects(site_id: str, frame: Frame, grid: SiteGrid) -> dict[str, bytes]:
    base = f"{site_id}/frames/{frame.scene.date}_{frame.scene.id}"
    return {f"{base}.tif": encode_ndvi(frame.ndvi, grid),
            f"{base}.png": encode_png(video_frame(frame.ndvi, frame.valid))}


def frame_entry(frame: Frame, keys: list[str]) -> FrameEntry:
    s = frame.scene
    return FrameEntry(date=s.date, scene_id=s.id, datetime=s.datetime, item_ids=s.item_ids,
                      processing_baseline=s.processing_baseline, coverage=round(frame.screening.coverage, 4),
                      clear_fraction=round(frame.screening.clear_fraction, 4),
                      objects={"ndvi": keys[0], "video": keys[1]})


def rejection(scene: Scene, reason: str, screening: Screening | None, *, retry: bool = False) -> Rejection:
    return Rejection(date=scene.date, scene_id=scene.id, datetime=scene.datetime, reason=reason,
                     coverage=round(screening.coverage, 4) if screening else None,
                     clear_fraction=round(screening.clear_fraction, 4) if screening else None, retry=retry)


def ingest(site: Site, catalog: Catalog, store: Store, *, start: dt.date | None = None, end: dt.date | None = None,
           reader: Reader | None = None, progress: Callable[[int], object] | None = None,
           on_scenes: Callable[[int], object] | None = None) -> IngestReport:
    """Append every new cloud-free scene of a site to its stored sequence; one atomic append per scene so an
    interrupted run keeps what it finished."""
    reader = reader or RasterioReader()
    grid = site_grid(site.polygon, site.resolution_m)
    manifest, _ = load_manifest(store, site.id)
    window = search_window(site, manifest, start, end)
    items = catalog.search(aoi=site.polygon, start=window[0], end=window[1], max_cloud=defaults.SCENE_CLOUD_PREFILTER)
    scenes = group_scenes(items)
    known = manifest.known_scene_ids()
    report = IngestReport(site.id, found=len(scenes))
    new = [s for s in scenes if s.id not in known]
    report.already_present = len(scenes) - len(new)
    if on_scenes:
        on_scenes(len(new))
    for scene in new:
        _ingest_scene(scene, site, grid, store, reader, report)
        if progress:
            progress(1)
    return report


def _ingest_scene(scene: Scene, site: Site, grid: SiteGrid, store: Store, reader: Reader, report: IngestReport) -> None:
    try:
        screening, frame = load_scene(scene, site.polygon, grid, reader, min_coverage=site.min_coverage,
                                      max_cloud_fraction=site.max_cloud_fraction)
    except SceneRejected as exc:
        screening, frame, reason = None, None, str(exc)
    except ReadError as exc:  # recorded as pending, not final: the next run reads it again
        log.warning("scene %s skipped: %s", scene.id, exc)
        append(store, site.id, frames=[], rejections=[rejection(scene, f"unreadable: {exc}", None, retry=True)],
               grid=grid.to_dict(), data={})
        report.skipped.append((scene.id, str(exc)))
        return
    else:
        reason = screening.reason or ""
    if frame is None:
        merged = append(store, site.id, frames=[], rejections=[rejection(scene, reason, screening)],
                        grid=grid.to_dict(), data={})
        report.rejected.append((scene.id, reason))
    else:
        data = frame_objects(site.id, frame, grid)
        merged = append(store, site.id, frames=[frame_entry(frame, list(data))], rejections=[], grid=grid.to_dict(),
                        data=data)
        report.appended.extend(merged.appended)
        report.already_present += len(merged.already_present)
    if merged.dirty_from:
        report.dirty_from = min(filter(None, [report.dirty_from, merged.dirty_from]))
