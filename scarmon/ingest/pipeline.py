"""Ingestion: discover → screen → load → append, for one site. Each stage is a plain function; this module only
orchestrates them and reports what happened.

Scenes are read, decoded and encoded by a bounded pool of threads (`defaults.READ_CONCURRENCY`; GDAL, numpy,
zlib release the GIL) while this thread appends finished scenes to the manifest, in acquisition order: every
append is atomic, and an interrupted run keeps every scene before the first unfinished one.

Nothing that may be temporary is made permanent: a scene whose items lack assets, or whose pass is not complete
yet (coverage below the site's minimum), is recorded as pending (`Rejection.retry`) and looked at again on later
runs while it is younger than `RETRY_PENDING_DAYS` before the newest scene; a coverage rejection is re-read only
when the scene's items changed. Unreadable scenes are retried on `RETRY_MAX_ATTEMPTS` runs.

A stored frame whose acquisition the catalog now lists with a newer processing baseline (found by the periodic
deep re-scan, or within the reach-back window) is read again like any scene. If the new processing passes
screening it replaces the frame's entry in the manifest (same scene id, date and datetime; compare-and-swap, so
racing runs replace it once), under object keys that name the baseline (`keys.frame_base(..., processing=...)`):
the replaced processing's objects stay in the store, and the manifest lists the replaced entry under `superseded`.
A replaced frame that tracking already processed sets `dirty_from`, so the tracker re-runs from it. A newer
processing that screening rejects leaves the frame as it is; it is recorded (`declined_reprocessings`) and not read
again until the catalog's items for the scene change. Equal, older or unknown baselines change nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from scarmon import defaults
from scarmon.dates import optional_utc_datetime as parse_datetime
from scarmon.grid import SiteGrid, site_grid
from scarmon.ingest.discovery import Catalog
from scarmon.ingest.frames import encode_ndvi, encode_png
from scarmon.ingest.loading import Frame, SceneRejected, load_scene
from scarmon.ingest.radiometry import baseline_version, video_frame
from scarmon.ingest.reader import RasterioReader, Reader, ReadError
from scarmon.ingest.scenes import Scene, group_scenes, stored_id
from scarmon.ingest.screening import Screening
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import Store
from scarmon.store.sequence import (
    DeclinedReprocessing,
    FrameEntry,
    Manifest,
    MergeReport,
    Rejection,
    Replacement,
    append,
    load_manifest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replaced:
    """A stored frame whose entry a newer processing of the same acquisition replaced."""

    scene_id: str
    old_baseline: str | None
    new_baseline: str | None
    datetime: str  # the frame's acquisition datetime
    retrack: bool  # tracking had processed it: it re-runs from this frame

    def line(self) -> str:
        then = (
            f"tracking re-runs from {self.datetime[:10]}"
            if self.retrack
            else "not tracked yet: tracked with the new processing"
        )
        return f"replaced {self.scene_id}: processing {self.old_baseline} → {self.new_baseline}; {then}"


@dataclass
class IngestReport:
    site_id: str
    found: int = 0  # scenes in the search window
    already_present: int = 0  # frames or rejections stored before
    appended: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (scene id, reason), final
    pending: list[tuple[str, str]] = field(default_factory=list)  # (scene id, reason), looked at again later
    skipped: list[tuple[str, str]] = field(default_factory=list)  # read failures / malformed items
    replaced: list[Replaced] = field(default_factory=list)  # frames a newer processing replaced
    kept: list[tuple[str, str]] = field(default_factory=list)  # (scene id, why): newer processing rejected, frame kept
    dirty_from: str | None = None
    deep: bool = False  # the search covered the site's whole history

    def summary(self) -> str:
        deep = " (deep re-scan of the whole history)" if self.deep else ""
        replaced = f", {len(self.replaced)} replaced by a newer processing" if self.replaced else ""
        lines = [
            f"site {self.site_id}: {self.found} scene(s) found, {len(self.appended)} appended, "
            f"{len(self.rejected)} rejected, {len(self.pending)} pending, {self.already_present} already "
            f"present, {len(self.skipped)} skipped{replaced}{deep}"
        ]
        lines += [f"  rejected {sid}: {why}" for sid, why in self.rejected]
        lines += [f"  pending  {sid}: {why} (looked at again on later runs)" for sid, why in self.pending]
        lines += [f"  skipped  {sid}: {why}" for sid, why in self.skipped]
        lines += [f"  {r.line()}" for r in self.replaced]
        lines += [f"  kept     {sid}: {why}" for sid, why in self.kept]
        if self.dirty_from:
            lines.append(
                f"  tracking must re-run from {self.dirty_from} (a scene arrived late or a frame was replaced)"
            )
        return "\n".join(lines)


# --- Pure decisions ---------------------------------------------------------------------------------------------------


def deep_rescan_due(site_id: str, today: dt.date, period_days: int = defaults.DEEP_RESCAN_DAYS) -> bool:
    """True on one day per period, fixed per site by its id (sites spread their deep searches over the period)."""
    if period_days <= 0:
        return False
    return today.toordinal() % period_days == zlib.crc32(site_id.encode()) % period_days


def search_window(
    site: Site, manifest: Manifest, start: dt.date | None, end: dt.date | None, *, deep: bool = False
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end] of the catalog search.

    1. An explicit --start wins; 2. a deep re-scan, or an empty sequence, searches from the site's start; 3. else
    the cursor minus LATE_PUBLICATION_DAYS (late scenes), reaching further back to any pending scene.
    """
    end_dt = _utc(end + dt.timedelta(days=1)) if end else dt.datetime.now(dt.UTC)
    if start:
        return _utc(start), end_dt
    cursor = _parse(manifest.cursor())
    if cursor is None or deep:
        return _utc(site.start), end_dt
    back = cursor - dt.timedelta(days=defaults.LATE_PUBLICATION_DAYS)
    back = min([back, *(_parse(r.datetime) or back for r in manifest.pending())])
    return max(back, _utc(site.start)), end_dt


def _parse(value: str | None) -> dt.datetime | None:
    return parse_datetime(value) if value else None


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def may_retry(scene_datetime: str, newest: dt.datetime | None, days: int | None = None) -> bool:
    """A temporary catalog state (missing assets, pass incomplete) is retried while the scene is younger than
    `days` (default RETRY_PENDING_DAYS) before the newest scene the site knows or found."""
    days = defaults.RETRY_PENDING_DAYS if days is None else days
    when = _parse(scene_datetime)
    return when is None or newest is None or when >= newest - dt.timedelta(days=days)


def identify(scenes: Iterable[Scene], manifest: Manifest) -> list[Scene]:
    """Scenes under the ids the store already uses for them (orbit-less ids written from Earth Search before)."""
    stored = {f.scene_id for f in manifest.frames} | {r.scene_id for r in manifest.rejections}
    out, taken = [], {s.id for s in scenes}
    for s in scenes:
        sid = stored_id(s.id, stored)
        if sid != s.id and sid not in taken:  # one scene per stored id (two orbits on one day keep their own ids)
            taken.add(sid)
            s = replace(s, id=sid)
        out.append(s)
    return out


def baseline_order(baseline: str | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """How new a processing is: (newest, oldest) baseline of its tiles as (major, minor) numbers ("04.00,05.11" →
    ((5, 11), (4, 0))); None when unknown or not a number (such a processing is never taken as newer)."""
    if not baseline:
        return None
    versions = [baseline_version(part) for part in str(baseline).split(",")]
    if None in versions:
        return None
    known = [v for v in versions if v is not None]
    return max(known), min(known)


def newer_processing(offered: str | None, stored: str | None) -> bool:
    """True when the catalog's processing is newer than the stored frame's ("05.11" > "04.00", numerically; a pass
    with one tile reprocessed is newer than none); equal, older or unknown baselines: False."""
    new, old = baseline_order(offered), baseline_order(stored)
    return new is not None and old is not None and new > old


@dataclass(frozen=True)
class Plan:
    read: list[Scene]  # scenes to screen (and load)
    known: int  # decided before: skipped without reading
    unchanged: list[tuple[Scene, Rejection]]  # pending, same items as last time: nothing to read
    reprocessed: list[tuple[Scene, FrameEntry]] = field(default_factory=list)  # newer processings to read, and the
    # stored frame each would replace (the scene carries the frame's datetime)


def plan(scenes: list[Scene], manifest: Manifest) -> Plan:
    """Pure: which scenes a run reads. A pending coverage rejection is re-read only when its items changed; a
    stored frame is read again when the catalog lists a newer processing of it that was not declined with the
    same items before."""
    known = manifest.known_scene_ids()
    pending = {r.scene_id: r for r in manifest.pending()}
    frames = {f.scene_id: f for f in manifest.frames}
    read, unchanged, reprocessed, n_known = [], [], [], 0
    for s in scenes:
        if s.id in known:
            n_known += 1
            f = frames.get(s.id)
            if f is not None and newer_processing(s.processing_baseline, f.processing_baseline):
                declined = manifest.declined(s.id)
                if declined is None or declined.item_ids != s.item_ids:
                    reprocessed.append((replace(s, datetime=f.datetime), f))
        elif (p := pending.get(s.id)) is not None and p.item_ids and p.item_ids == s.item_ids:
            unchanged.append((s, p))
        else:
            read.append(s)
    return Plan(read, n_known, unchanged, reprocessed)


# --- Objects and manifest entries -------------------------------------------------------------------------------------


def frame_objects(site_id: str, frame: Frame, grid: SiteGrid, *, processing: str | None = None) -> dict[str, bytes]:
    """The NDVI COG and the video frame; `processing` (a newer processing replacing a stored frame) gives them keys
    of their own, so the replaced processing's objects are kept."""
    base = keys.frame_base(site_id, frame.scene.date, frame.scene.id, processing)
    return {
        f"{base}.tif": encode_ndvi(frame.ndvi, grid),
        f"{base}.png": encode_png(video_frame(frame.ndvi, frame.valid)),
    }


def frame_entry(frame: Frame, keys: list[str]) -> FrameEntry:
    s = frame.scene
    return FrameEntry(
        date=s.date,
        scene_id=s.id,
        datetime=s.datetime,
        item_ids=s.item_ids,
        processing_baseline=s.processing_baseline,
        coverage=round(frame.screening.coverage, 4),
        clear_fraction=round(frame.screening.clear_fraction, 4),
        objects={"ndvi": keys[0], "video": keys[1]},
        bright_fraction=None if frame.bright_fraction is None else round(frame.bright_fraction, 4),
    )


def rejection(
    scene: Scene,
    reason: str,
    screening: Screening | None,
    *,
    retry: bool = False,
    attempts: int = 0,
    item_ids: tuple[str, ...] = (),
) -> Rejection:
    return Rejection(
        date=scene.date,
        scene_id=scene.id,
        datetime=scene.datetime,
        reason=reason,
        coverage=round(screening.coverage, 4) if screening else None,
        clear_fraction=round(screening.clear_fraction, 4) if screening else None,
        retry=retry,
        attempts=attempts,
        item_ids=item_ids,
    )


@dataclass(frozen=True)
class Outcome:
    """What reading one scene produced: a frame with its objects, or a rejection (final or pending)."""

    scene: Scene
    frame: FrameEntry | None = None
    data: dict[str, bytes] = field(default_factory=dict)
    rejection: Rejection | None = None
    unreadable: str | None = None
    replaces: FrameEntry | None = None  # a newer processing of this stored frame was read


@dataclass(frozen=True)
class Context:
    site: Site
    grid: SiteGrid
    reader: Reader
    pending: dict[str, Rejection]
    newest: dt.datetime | None


def process(scene: Scene, ctx: Context, replaces: FrameEntry | None = None) -> Outcome:
    """Screen, load and encode one scene (runs in a worker thread; touches no shared state but the reader's).

    `replaces`: the stored frame this scene is a newer processing of. Its rejection is never final by age (the
    frame is kept whatever happens): `retry` then says whether the state may pass (missing assets, a tile not
    reprocessed yet)."""
    if replaces is not None:
        return replace(_process(scene, ctx, retry_ok=True, processing=scene.processing_baseline), replaces=replaces)
    return _process(scene, ctx, retry_ok=may_retry(scene.datetime, ctx.newest))


def _process(scene: Scene, ctx: Context, *, retry_ok: bool, processing: str | None = None) -> Outcome:
    site = ctx.site
    try:
        screening, frame = load_scene(
            scene,
            site.polygon,
            ctx.grid,
            ctx.reader,
            min_coverage=site.min_coverage,
            max_cloud_fraction=site.max_cloud_fraction,
            bright_red_min=site.bright_red_min,
        )
    except SceneRejected as exc:
        retry = exc.retry and retry_ok
        return Outcome(scene, rejection=rejection(scene, _final(str(exc), exc.retry and not retry), None, retry=retry))
    except ReadError as exc:  # pending, not final: later runs read it again, a bounded number of times
        log.warning("scene %s unreadable: %s", scene.id, exc)
        prev = ctx.pending.get(scene.id)
        attempts = (prev.attempts if prev else 0) + 1
        retry = attempts < defaults.RETRY_MAX_ATTEMPTS
        reason = f"unreadable: {exc}" + ("" if retry else f" (gave up after {attempts} runs)")
        return Outcome(
            scene, rejection=rejection(scene, reason, None, retry=retry, attempts=attempts), unreadable=str(exc)
        )
    if frame is None:
        partial = screening.coverage < site.min_coverage
        retry = partial and retry_ok
        reason = _final(screening.reason or "rejected", partial and not retry)
        return Outcome(
            scene, rejection=rejection(scene, reason, screening, retry=retry, item_ids=scene.item_ids if retry else ())
        )
    data = frame_objects(site.id, frame, ctx.grid, processing=processing)
    return Outcome(scene, frame=frame_entry(frame, list(data)), data=data)


def _final(reason: str, gave_up: bool) -> str:
    return reason + (f" (still so {defaults.RETRY_PENDING_DAYS} days later: final)" if gave_up else "")


# --- The run ---------------------------------------------------------------------------------------------------------


def ingest(
    site: Site,
    catalog: Catalog,
    store: Store,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    reader: Reader | None = None,
    progress: Callable[[int], object] | None = None,
    on_scenes: Callable[[int], object] | None = None,
    concurrency: int | None = None,
    deep: bool | None = None,
) -> IngestReport:
    """Append every new cloud-free scene of a site to its stored sequence.

    `concurrency`: scenes in flight (default `SCARMON_READ_CONCURRENCY` or `defaults.READ_CONCURRENCY`).
    `deep`: search the site's whole history (None: on the site's day of each `DEEP_RESCAN_DAYS` period).
    """
    reader = reader or RasterioReader()
    workers = max(1, concurrency or int(os.environ.get("SCARMON_READ_CONCURRENCY", defaults.READ_CONCURRENCY)))
    grid = site_grid(site.polygon, site.resolution_m)
    manifest, _ = load_manifest(store, site.id)
    if deep is None:
        today = dt.datetime.now(dt.UTC).date()
        deep = start is None and manifest.cursor() is not None and deep_rescan_due(site.id, today)
    window = search_window(site, manifest, start, end, deep=deep)
    items = catalog.search(aoi=site.polygon, start=window[0], end=window[1], max_cloud=defaults.SCENE_CLOUD_PREFILTER)
    scenes = identify(group_scenes(items), manifest)
    report = IngestReport(site.id, found=len(scenes), deep=deep)
    report.skipped.extend((name, f"malformed catalog item: {why}") for name, why in getattr(catalog, "malformed", []))
    todo = plan(scenes, manifest)
    report.already_present = todo.known
    newest = max(filter(None, [_parse(manifest.cursor()), *(_parse(s.datetime) for s in scenes)]), default=None)
    ctx = Context(site, grid, reader, {r.scene_id: r for r in manifest.pending()}, newest)
    _settle_unchanged(todo.unchanged, ctx, store, report)
    stored = {scene.id: f for scene, f in todo.reprocessed}
    to_read = sorted([*todo.read, *(scene for scene, _ in todo.reprocessed)], key=lambda s: (s.datetime, s.id))
    if on_scenes:
        on_scenes(len(to_read))
    for batch in _in_order(to_read, lambda s: process(s, ctx, stored.get(s.id)), workers):
        _commit(batch, site, grid, store, report)
        if progress:
            progress(len(batch))
    return report


def _in_order(scenes: list[Scene], work: Callable[[Scene], Outcome], workers: int) -> Iterator[list[Outcome]]:
    """Run `work` on a bounded pool; yield results in input order, in batches of those already finished."""
    if workers == 1:
        for s in scenes:
            yield [work(s)]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scarmon-ingest")
    todo = iter(scenes)
    inflight: deque[Future[Outcome]] = deque()
    try:
        for s in todo:
            inflight.append(pool.submit(work, s))
            if len(inflight) >= 2 * workers:
                break
        while inflight:
            batch = [inflight.popleft().result()]
            while inflight and inflight[0].done():
                batch.append(inflight.popleft().result())
            for s in todo:
                inflight.append(pool.submit(work, s))
                if len(inflight) >= 2 * workers:
                    break
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _commit(batch: list[Outcome], site: Site, grid: SiteGrid, store: Store, report: IngestReport) -> None:
    """One atomic append for a batch of consecutive scenes (new scenes, and newer processings of stored frames)."""
    frames = [o.frame for o in batch if o.frame is not None and o.replaces is None]
    rejections = [o.rejection for o in batch if o.rejection is not None and o.replaces is None]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    replacements = [Replacement(o.replaces, o.frame, now) for o in batch if o.replaces and o.frame]
    declined = [_declined(o, now) for o in batch if o.replaces and o.rejection and _final_for_items(o)]
    data = {k: v for o in batch for k, v in o.data.items()}
    merged = append(
        store,
        site.id,
        frames=frames,
        rejections=rejections,
        grid=grid.to_dict(),
        data=data,
        replacements=replacements,
        declined=declined,
    )
    report.appended.extend(merged.appended)
    report.already_present += len(merged.already_present)
    _report_reprocessed(batch, merged, report)
    for o in batch:
        r = o.rejection
        if r is None or o.replaces is not None:
            continue
        if o.unreadable is not None and r.retry:
            report.skipped.append((r.scene_id, o.unreadable))
        elif r.retry:
            report.pending.append((r.scene_id, r.reason))
        else:
            report.rejected.append((r.scene_id, r.reason))
    if merged.dirty_from:
        report.dirty_from = min(filter(None, [report.dirty_from, merged.dirty_from]))


def _final_for_items(o: Outcome) -> bool:
    """A rejected newer processing is recorded (not read again while its items stay the same) unless its state
    may pass with the same items: missing assets, unreadable files."""
    r = o.rejection
    return r is not None and o.unreadable is None and (not r.retry or bool(r.item_ids))


def _declined(o: Outcome, now: str) -> DeclinedReprocessing:
    assert o.rejection is not None
    return DeclinedReprocessing(
        scene_id=o.scene.id,
        processing_baseline=o.scene.processing_baseline,
        item_ids=o.scene.item_ids,
        reason=o.rejection.reason,
        decided_at=now,
    )


def _report_reprocessed(batch: list[Outcome], merged: MergeReport, report: IngestReport) -> None:
    """Replaced frames, and newer processings that left the stored frame as it was (and why)."""
    replaced, tracked = set(merged.replaced), set(merged.replaced_tracked)
    for o in batch:
        old = o.replaces
        if old is None:
            continue
        new = o.scene.processing_baseline
        if o.frame is not None and old.scene_id in replaced:
            report.replaced.append(
                Replaced(old.scene_id, old.processing_baseline, new, old.datetime, old.scene_id in tracked)
            )
        elif o.frame is not None:  # another run replaced (or changed) the entry first
            report.kept.append(
                (old.scene_id, f"newer processing {new} not applied: another run changed the frame first")
            )
        elif o.unreadable is not None:
            report.skipped.append((old.scene_id, f"newer processing {new} unreadable ({o.unreadable}); frame kept"))
        elif o.rejection is not None:
            temporary = o.rejection.retry and not o.rejection.item_ids
            again = "read again on later runs" if temporary else "not read again unless its items change"
            report.kept.append(
                (
                    old.scene_id,
                    f"newer processing {new} rejected ({o.rejection.reason}); the stored "
                    f"{old.processing_baseline} frame is kept ({again})",
                )
            )


def _settle_unchanged(
    unchanged: list[tuple[Scene, Rejection]], ctx: Context, store: Store, report: IngestReport
) -> None:
    """Pending scenes whose items did not change: nothing to read; made final once too old to wait for."""
    final = []
    for scene, pending in unchanged:
        if may_retry(scene.datetime, ctx.newest):
            report.pending.append((scene.id, pending.reason))
        else:
            final.append(replace(pending, retry=False, item_ids=(), reason=_final(pending.reason, True)))
    if final:
        append(store, ctx.site.id, frames=[], rejections=final, grid=ctx.grid.to_dict(), data={})
        report.rejected.extend((r.scene_id, r.reason) for r in final)
