"""The per-site sequence manifest: which frames (and screened-out scenes) a site has, in acquisition order.

Layout in a store, for a site id (a slug, `[a-z0-9][a-z0-9-]{0,62}`):

- `{site_id}/manifest.json` is the only object that makes data visible. Readers trust nothing else.
- `{site_id}/frames/...` holds data objects (NDVI COGs, video frames); keys are chosen by the caller and are written
  BEFORE the manifest swap, so a frame is visible only when all its objects are complete.

Appending is append-only, atomic, idempotent and safe for overlapping runs: write data objects, then swap the
manifest with a conditional put (`Store.put_if` with the tag read); if another run swapped first, re-read, re-merge
and retry. The merge itself (`merge`) is pure so it can be tested and reasoned about without storage.

A run killed between writing data and swapping leaves orphaned data objects: harmless, nothing references them,
and the next run for the same scene rewrites the same keys.

Rules worth knowing:
- A scene is identified by `scene_id`. A scene already known (as a frame or as a rejection) is never changed by a
  later append: it is reported as `already_present`. In particular a scene once rejected stays rejected even if a
  later run (e.g. with looser thresholds) offers it as a frame; use a new site id/store to re-screen history.
- Frames sort by (acquisition datetime, scene_id). A new frame at or before `tracked_until` means tracking already
  ran past its place: `dirty_from` becomes the earliest such datetime so the tracker re-runs from there.
- `revision` grows by one per successful swap; an append that adds nothing does not swap and does not bump it.
- The one exception to "a known scene is never changed": a newer processing of a stored frame's acquisition
  (`Replacement`, offered by ingestion's re-scan) replaces the frame's entry, keeping its scene id, date and
  datetime. It is a compare-and-swap: it applies only while the stored entry is still the one the caller replaced
  (a second run, or a run that lost a race, changes nothing). The replaced entry is kept in `superseded` with when
  and by which baseline, and its objects stay in the store (the new processing is written under keys of its own,
  `keys.frame_base(..., processing=...)`); a replaced frame at or before `tracked_until` sets `dirty_from` like a
  late frame. A newer processing that was screened out is recorded in `declined_reprocessings` (per scene, with
  the item ids it saw) so it is not read again until the catalog's items change.
- Manifests without `superseded` / `declined_reprocessings` (written before they existed) load as having none;
  both are written only when not empty.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date as _date
from datetime import datetime as _datetime
from typing import Any

from scarmon.dates import utc_datetime
from scarmon.errors import ScarmonError
from scarmon.grid import SiteGrid
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store, StoreError, validate_key
from scarmon.store.documents import StillConflicting, update_document
from scarmon.store.lock import check_lease

FORMAT = "scarmon.sequence/1"
SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
log = logging.getLogger(__name__)


class SequenceError(ScarmonError):
    """The sequence cannot be read or changed as asked; the message says which site/key and what to do."""


def check_site_id(site_id: str) -> str:
    if not isinstance(site_id, str) or not SITE_ID.match(site_id):
        raise SequenceError(
            f"invalid site id {site_id!r}: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return site_id


def parse_datetime(value: str, *, what: str = "datetime") -> _datetime:
    """ISO 8601 datetime to an aware UTC datetime (scarmon.dates); SequenceError naming `what` otherwise."""
    try:
        return utc_datetime(value)
    except (TypeError, ValueError) as e:
        raise SequenceError(f"{what} {value!r} is not an ISO 8601 datetime (e.g. 2024-05-01T10:20:31Z)") from e


def _check_date(value: str, scene_id: str) -> None:
    if not isinstance(value, str) or not _DATE.match(value):
        raise SequenceError(f"scene {scene_id!r}: date {value!r} must be YYYY-MM-DD")
    try:
        _date.fromisoformat(value)
    except ValueError as e:
        raise SequenceError(f"scene {scene_id!r}: date {value!r} is not a calendar date") from e


def _check_fraction(value: Any, name: str, scene_id: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise SequenceError(f"scene {scene_id!r}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_scene_id(scene_id: Any) -> str:
    if not isinstance(scene_id, str) or not scene_id.strip():
        raise SequenceError(f"scene_id must be a non-empty string, got {scene_id!r}")
    return scene_id


@dataclass(frozen=True)
class FrameEntry:
    """One accepted scene = one frame. `objects` maps a role ("ndvi", "video", ...) to a store key."""

    date: str  # acquisition date YYYY-MM-DD (UTC)
    scene_id: str  # unique, stable across runs
    datetime: str  # ISO acquisition datetime
    item_ids: tuple[str, ...]  # STAC items mosaicked into this frame
    processing_baseline: str | None
    coverage: float
    clear_fraction: float
    objects: dict[str, str] = field(default_factory=dict)
    # share of the AOI's SCL-clear pixels the spectral test (bright: cloud or snow SCL missed) left unobserved;
    # None: not tested (frames ingested before the test, or a site that turned it off)
    bright_fraction: float | None = None

    def __post_init__(self) -> None:
        sid = _check_scene_id(self.scene_id)
        _check_date(self.date, sid)
        parse_datetime(self.datetime, what=f"scene {sid!r}: datetime")
        items = tuple(self.item_ids)
        if not all(isinstance(i, str) and i for i in items):
            raise SequenceError(f"scene {sid!r}: item_ids must be non-empty strings, got {self.item_ids!r}")
        object.__setattr__(self, "item_ids", items)
        if self.processing_baseline is not None and not isinstance(self.processing_baseline, str):
            raise SequenceError(f"scene {sid!r}: processing_baseline must be a string or None")
        object.__setattr__(self, "coverage", _check_fraction(self.coverage, "coverage", sid))
        object.__setattr__(self, "clear_fraction", _check_fraction(self.clear_fraction, "clear_fraction", sid))
        object.__setattr__(
            self, "bright_fraction", _check_fraction(self.bright_fraction, "bright_fraction", sid, optional=True)
        )
        if not isinstance(self.objects, Mapping):
            raise SequenceError(f"scene {sid!r}: objects must be a mapping role -> store key")
        objects = dict(self.objects)  # a private copy: the caller's dict must not change a stored entry
        for role, key in objects.items():
            if not isinstance(role, str) or not role:
                raise SequenceError(f"scene {sid!r}: object role {role!r} must be a non-empty string")
            try:
                validate_key(key)
            except StoreError as e:
                raise SequenceError(f"scene {sid!r}, object {role!r}: {e}") from e
        object.__setattr__(self, "objects", objects)

    @property
    def sort_key(self) -> tuple[_datetime, str]:
        return parse_datetime(self.datetime), self.scene_id

    @property
    def observed_fraction(self) -> float:
        """Share of the covered AOI observed: SCL's clear share less what the spectral test masked in it."""
        return self.clear_fraction * (1.0 - (self.bright_fraction or 0.0))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "date": self.date,
            "scene_id": self.scene_id,
            "datetime": self.datetime,
            "item_ids": list(self.item_ids),
            "processing_baseline": self.processing_baseline,
            "coverage": self.coverage,
            "clear_fraction": self.clear_fraction,
            "objects": dict(self.objects),
        }
        if self.bright_fraction is not None:
            out["bright_fraction"] = self.bright_fraction
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FrameEntry:
        return cls(
            date=d["date"],
            scene_id=d["scene_id"],
            datetime=d["datetime"],
            item_ids=tuple(d["item_ids"]),
            processing_baseline=d["processing_baseline"],
            coverage=d["coverage"],
            clear_fraction=d["clear_fraction"],
            objects=dict(d["objects"]),
            bright_fraction=d.get("bright_fraction"),
        )


@dataclass(frozen=True)
class Rejection:
    """A screened-out scene, kept so it is not re-read every tick and so users can see why it was dropped."""

    date: str
    scene_id: str
    datetime: str
    reason: str
    coverage: float | None = None
    clear_fraction: float | None = None
    retry: bool = False  # could not be read this time (network, corrupt file): searched for again, not final
    attempts: int = 0  # runs that tried a pending (retry) scene so far: ingestion bounds its retries with it
    item_ids: tuple[str, ...] = ()  # STAC items the decision saw: a pending scene is re-read when they change

    def __post_init__(self) -> None:
        sid = _check_scene_id(self.scene_id)
        _check_date(self.date, sid)
        parse_datetime(self.datetime, what=f"scene {sid!r}: datetime")
        if not isinstance(self.reason, str) or not self.reason:
            raise SequenceError(f"scene {sid!r}: a rejection needs a non-empty reason")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 0:
            raise SequenceError(f"scene {sid!r}: attempts must be a non-negative integer, got {self.attempts!r}")
        items = tuple(self.item_ids)
        if not all(isinstance(i, str) and i for i in items):
            raise SequenceError(f"scene {sid!r}: item_ids must be non-empty strings, got {self.item_ids!r}")
        object.__setattr__(self, "item_ids", items)
        object.__setattr__(self, "coverage", _check_fraction(self.coverage, "coverage", sid, optional=True))
        object.__setattr__(
            self, "clear_fraction", _check_fraction(self.clear_fraction, "clear_fraction", sid, optional=True)
        )

    @property
    def sort_key(self) -> tuple[_datetime, str]:
        return parse_datetime(self.datetime), self.scene_id

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "date": self.date,
            "scene_id": self.scene_id,
            "datetime": self.datetime,
            "reason": self.reason,
            "coverage": self.coverage,
            "clear_fraction": self.clear_fraction,
        }
        if self.retry:
            out["retry"] = True
        if self.attempts:
            out["attempts"] = self.attempts
        if self.item_ids:
            out["item_ids"] = list(self.item_ids)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Rejection:
        return cls(
            date=d["date"],
            scene_id=d["scene_id"],
            datetime=d["datetime"],
            reason=d["reason"],
            coverage=d["coverage"],
            clear_fraction=d["clear_fraction"],
            retry=bool(d.get("retry", False)),
            attempts=d.get("attempts", 0),
            item_ids=tuple(d.get("item_ids", ())),
        )


@dataclass(frozen=True)
class Replacement:
    """A newer processing of a stored frame's acquisition: `new` replaces `old` if `old` is still the stored entry.

    `at`: when the caller decided it (ISO datetime, UTC), recorded with the superseded entry."""

    old: FrameEntry
    new: FrameEntry
    at: str

    def __post_init__(self) -> None:
        if not isinstance(self.old, FrameEntry) or not isinstance(self.new, FrameEntry):
            raise SequenceError("a replacement needs the stored FrameEntry (old) and its new FrameEntry (new)")
        if self.new.scene_id != self.old.scene_id:
            raise SequenceError(
                f"a replacement must keep the scene id: {self.new.scene_id!r} offered for {self.old.scene_id!r}"
            )
        parse_datetime(self.at, what=f"scene {self.old.scene_id!r}: replacement time")


@dataclass(frozen=True)
class Superseded:
    """A frame entry that a newer processing replaced. Its objects are still in the store, under its keys."""

    frame: FrameEntry  # the entry as it was stored
    replaced_at: str  # ISO datetime (UTC) of the replacement
    by_processing_baseline: str | None  # the processing that replaced it

    def __post_init__(self) -> None:
        if not isinstance(self.frame, FrameEntry):
            raise SequenceError(f"a superseded record needs a FrameEntry, got {type(self.frame).__name__}")
        parse_datetime(self.replaced_at, what=f"scene {self.frame.scene_id!r}: replaced_at")
        if self.by_processing_baseline is not None and not isinstance(self.by_processing_baseline, str):
            raise SequenceError(f"scene {self.frame.scene_id!r}: by_processing_baseline must be a string or None")

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame.to_json(),
            "replaced_at": self.replaced_at,
            "by_processing_baseline": self.by_processing_baseline,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Superseded:
        return cls(
            frame=FrameEntry.from_json(d["frame"]),
            replaced_at=d["replaced_at"],
            by_processing_baseline=d["by_processing_baseline"],
        )


@dataclass(frozen=True)
class DeclinedReprocessing:
    """A newer processing of a stored frame that screening rejected (clouds, coverage): the frame was kept. It is
    not read again while the catalog lists the same items for the scene."""

    scene_id: str
    processing_baseline: str | None
    item_ids: tuple[str, ...]
    reason: str
    decided_at: str  # ISO datetime (UTC)

    def __post_init__(self) -> None:
        sid = _check_scene_id(self.scene_id)
        items = tuple(self.item_ids)
        if not all(isinstance(i, str) and i for i in items):
            raise SequenceError(f"scene {sid!r}: item_ids must be non-empty strings, got {self.item_ids!r}")
        object.__setattr__(self, "item_ids", items)
        if self.processing_baseline is not None and not isinstance(self.processing_baseline, str):
            raise SequenceError(f"scene {sid!r}: processing_baseline must be a string or None")
        if not isinstance(self.reason, str) or not self.reason:
            raise SequenceError(f"scene {sid!r}: a declined reprocessing needs a non-empty reason")
        parse_datetime(self.decided_at, what=f"scene {sid!r}: decided_at")

    def to_json(self) -> dict[str, Any]:
        return {
            "scene_id": self.scene_id,
            "processing_baseline": self.processing_baseline,
            "item_ids": list(self.item_ids),
            "reason": self.reason,
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeclinedReprocessing:
        return cls(
            scene_id=d["scene_id"],
            processing_baseline=d["processing_baseline"],
            item_ids=tuple(d["item_ids"]),
            reason=d["reason"],
            decided_at=d["decided_at"],
        )


@dataclass(frozen=True)
class Manifest:
    """A site's sequence as of one revision. `grid` is None only before the first append."""

    site_id: str
    grid: dict[str, Any] | None
    frames: tuple[FrameEntry, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    tracked_until: str | None = None
    dirty_from: str | None = None
    revision: int = 0
    superseded: tuple[Superseded, ...] = ()  # frame entries replaced by a newer processing, oldest replacement first
    declined_reprocessings: tuple[DeclinedReprocessing, ...] = ()  # at most one per scene: the latest

    @property
    def site_grid(self) -> SiteGrid:
        """The site grid as a typed value (the manifest stores it as JSON); SequenceError before the first frame."""
        if self.grid is None:
            raise SequenceError(f"site {self.site_id!r} has no frames yet, so no grid; ingest scenes first")
        return SiteGrid.from_dict(self.grid)

    @classmethod
    def empty(cls, site_id: str) -> Manifest:
        return cls(site_id=check_site_id(site_id), grid=None)

    def known_scene_ids(self) -> set[str]:
        """Scenes this site has decided on (frames and final rejections): a run skips them without reading pixels."""
        return {f.scene_id for f in self.frames} | {r.scene_id for r in self.rejections if not r.retry}

    def pending(self) -> tuple[Rejection, ...]:
        """Scenes that could not be read yet: the next search must reach back to them."""
        return tuple(r for r in self.rejections if r.retry)

    def cursor(self) -> str | None:
        """Datetime of the newest frame or rejection (a search can start there), None for an empty sequence."""
        entries: list[FrameEntry | Rejection] = [*self.frames, *self.rejections]
        return max(entries, key=lambda e: e.sort_key).datetime if entries else None

    def frame(self, scene_id: str) -> FrameEntry | None:
        return next((f for f in self.frames if f.scene_id == scene_id), None)

    def declined(self, scene_id: str) -> DeclinedReprocessing | None:
        """The latest newer processing of this frame that was screened out (the frame was kept), if any."""
        return next((d for d in self.declined_reprocessings if d.scene_id == scene_id), None)

    def object_keys(self) -> set[str]:
        """Every data object the manifest references: its frames' and its superseded entries' (never overwrite)."""
        return {k for f in (*self.frames, *(s.frame for s in self.superseded)) for k in f.objects.values()}

    def to_json_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "site_id": self.site_id,
            "grid": self.grid,
            "revision": self.revision,
            "tracked_until": self.tracked_until,
            "dirty_from": self.dirty_from,
            "frames": [f.to_json() for f in self.frames],
            "rejections": [r.to_json() for r in self.rejections],
        }
        if self.superseded:  # written only when there are some: manifests of sites without any stay as they were
            doc["superseded"] = [s.to_json() for s in self.superseded]
        if self.declined_reprocessings:
            doc["declined_reprocessings"] = [d.to_json() for d in self.declined_reprocessings]
        return (json.dumps(doc, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json_bytes(cls, data: bytes, *, site_id: str, where: str) -> Manifest:
        """Parse and check a stored manifest; anything unexpected is a SequenceError naming `where`."""
        fix = (
            "scarmon will not overwrite it: inspect or restore the file (e.g. from a bucket version/backup), "
            "or move it away to start the site's sequence over"
        )
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SequenceError(f"manifest {where} is not valid JSON ({e}); {fix}") from e
        if not isinstance(doc, dict):
            raise SequenceError(f"manifest {where} is not a JSON object; {fix}")
        if doc.get("format") != FORMAT:
            raise SequenceError(
                f"manifest {where} has format {doc.get('format')!r}, expected {FORMAT!r} "
                f"(written by another scarmon version?); {fix}"
            )
        if doc.get("site_id") != site_id:
            raise SequenceError(f"manifest {where} belongs to site {doc.get('site_id')!r}, not {site_id!r}; {fix}")
        try:
            frames = tuple(sorted((FrameEntry.from_json(f) for f in doc["frames"]), key=lambda e: e.sort_key))
            rejections = tuple(sorted((Rejection.from_json(r) for r in doc["rejections"]), key=lambda e: e.sort_key))
            grid = doc["grid"]
            revision = doc["revision"]
            tracked_until, dirty_from = doc["tracked_until"], doc["dirty_from"]
            superseded = tuple(Superseded.from_json(x) for x in doc.get("superseded", []))  # absent before
            declined = tuple(DeclinedReprocessing.from_json(x) for x in doc.get("declined_reprocessings", []))
            if grid is not None and not isinstance(grid, dict):
                raise SequenceError("grid must be an object or null")
            if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
                raise SequenceError(f"revision must be a non-negative integer, got {revision!r}")
            for name, value in (("tracked_until", tracked_until), ("dirty_from", dirty_from)):
                if value is not None:
                    parse_datetime(value, what=name)
        except (KeyError, TypeError, ValueError, AttributeError, SequenceError) as e:
            detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise SequenceError(f"manifest {where} is malformed: {detail}; {fix}") from e
        ids = [f.scene_id for f in frames] + [r.scene_id for r in rejections]
        if len(ids) != len(set(ids)):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise SequenceError(f"manifest {where} lists scenes more than once: {dup}; {fix}")
        return cls(
            site_id=site_id,
            grid=grid,
            frames=frames,
            rejections=rejections,
            tracked_until=tracked_until,
            dirty_from=dirty_from,
            revision=revision,
            superseded=superseded,
            declined_reprocessings=declined,
        )


@dataclass(frozen=True)
class MergeReport:
    """What an append did. Scene ids are in sequence order."""

    appended: tuple[str, ...]  # new frames
    rejected: tuple[str, ...]  # new rejections
    already_present: tuple[str, ...]  # offered, but the site already knew the scene (as frame or rejection)
    inserted_before_tracked: bool  # a new frame landed at or before tracked_until
    dirty_from: str | None  # the manifest's dirty_from after the merge
    revision: int  # the manifest's revision after the merge (unchanged if nothing was new)
    replaced: tuple[str, ...] = ()  # frames whose entry a newer processing replaced
    replaced_tracked: tuple[str, ...] = ()  # of those, the ones tracking had already processed (now dirty)
    not_replaced: tuple[str, ...] = ()  # replacements offered for an entry that had changed meanwhile: ignored
    declined: tuple[str, ...] = ()  # newly recorded declined reprocessings

    @property
    def changed(self) -> bool:
        return bool(self.appended or self.rejected or self.replaced or self.declined)


def _normalize_grid(grid: Mapping[str, Any], site_id: str) -> dict[str, Any]:
    """JSON round trip so tuples/lists and int/float spellings compare as they will after a reload."""
    if not isinstance(grid, Mapping):
        raise SequenceError(f"site {site_id!r}: grid must be a mapping, got {type(grid).__name__}")
    try:
        normalized: dict[str, Any] = json.loads(json.dumps(grid, sort_keys=True, allow_nan=False))
        return normalized
    except (TypeError, ValueError) as e:
        raise SequenceError(f"site {site_id!r}: grid must be JSON-serializable ({e})") from e


def merge(
    manifest: Manifest,
    *,
    frames: Sequence[FrameEntry],
    rejections: Sequence[Rejection],
    grid: Mapping[str, Any],
    replacements: Sequence[Replacement] = (),
    declined: Sequence[DeclinedReprocessing] = (),
) -> tuple[Manifest, MergeReport]:
    """Pure: the manifest with the offered scenes added, and a report. Known scenes are left as they are, except
    for `replacements` (newer processings of stored frames, applied only where `old` is still the stored entry)
    and `declined` (newer processings screened out, recorded for frames the site has).

    Raises SequenceError if the grid differs from the site's, or if one scene is offered twice in the same call.
    If nothing is new (and the grid was already set) the same manifest object is returned, revision unchanged.
    """
    site_id = manifest.site_id
    grid = _normalize_grid(grid, site_id)
    if manifest.grid is not None and manifest.grid != grid:
        raise SequenceError(
            f"site {site_id!r}: the grid changed (stored {json.dumps(manifest.grid, sort_keys=True)}, "
            f"offered {json.dumps(grid, sort_keys=True)}). Frames of one sequence must share a grid: use a new site "
            "id or a new store for the new grid"
        )
    offered: list[FrameEntry | Rejection] = [*frames, *rejections]
    for e in offered:
        if not isinstance(e, (FrameEntry, Rejection)):
            raise SequenceError(f"site {site_id!r}: expected FrameEntry or Rejection, got {type(e).__name__}")
    for r in replacements:
        if not isinstance(r, Replacement):
            raise SequenceError(f"site {site_id!r}: expected Replacement, got {type(r).__name__}")
    for d in declined:
        if not isinstance(d, DeclinedReprocessing):
            raise SequenceError(f"site {site_id!r}: expected DeclinedReprocessing, got {type(d).__name__}")
    ids = [e.scene_id for e in offered] + [r.old.scene_id for r in replacements] + [d.scene_id for d in declined]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SequenceError(f"site {site_id!r}: scenes offered more than once in one append: {dup}")

    known = manifest.known_scene_ids()
    new_frames = sorted((f for f in frames if f.scene_id not in known), key=lambda e: e.sort_key)
    new_rejections = sorted((r for r in rejections if r.scene_id not in known), key=lambda e: e.sort_key)
    already = tuple(e.scene_id for e in sorted((e for e in offered if e.scene_id in known), key=lambda e: e.sort_key))

    # Replacements: compare-and-swap on the stored entry, keeping its scene id, date and datetime.
    stored = {f.scene_id: f for f in manifest.frames}
    swaps: dict[str, FrameEntry] = {}
    superseded: list[Superseded] = []
    not_replaced: list[str] = []
    for r in sorted(replacements, key=lambda r: r.old.sort_key):
        current = stored.get(r.old.scene_id)
        if current is None or current != r.old or r.new == current:
            not_replaced.append(r.old.scene_id)  # replaced (or removed) meanwhile by another run: nothing to do
            continue
        swaps[current.scene_id] = replace(r.new, date=current.date, datetime=current.datetime)
        superseded.append(Superseded(current, r.at, r.new.processing_baseline))
    in_use = manifest.object_keys()
    for sid, f in swaps.items():
        reused = sorted(set(f.objects.values()) & in_use)
        if reused:
            raise SequenceError(
                f"site {site_id!r}: the new processing of scene {sid!r} references {reused}, already an object of "
                "this sequence; a replacement needs keys of its own (keys.frame_base(..., processing=...))"
            )

    # Declined reprocessings: one record per stored frame (the latest), dropped once a replacement succeeds.
    old_declined = {d.scene_id: d for d in manifest.declined_reprocessings}
    new_declined = [
        d for d in declined if d.scene_id in stored and d.scene_id not in swaps and old_declined.get(d.scene_id) != d
    ]
    declined_out = {**old_declined, **{d.scene_id: d for d in new_declined}}
    for sid in swaps:
        declined_out.pop(sid, None)

    dirty_from = manifest.dirty_from
    inserted_before = False
    replaced_tracked: list[str] = []
    if manifest.tracked_until is not None:
        tracked = parse_datetime(manifest.tracked_until)
        # "<=": a frame at the tracked datetime but a later scene_id was not seen by the tracker either.
        late = [f for f in new_frames if f.sort_key[0] <= tracked]
        inserted_before = bool(late)
        replaced_tracked = [sid for sid, f in swaps.items() if f.sort_key[0] <= tracked]
        changed_at = [late[0].datetime] if late else []
        changed_at += [swaps[sid].datetime for sid in replaced_tracked]
        if changed_at:
            dirty_from = min([*changed_at, *([dirty_from] if dirty_from else [])], key=parse_datetime)

    grid_set = manifest.grid is None
    if not new_frames and not new_rejections and not swaps and not new_declined and not grid_set:
        return manifest, MergeReport(
            (), (), already, False, manifest.dirty_from, manifest.revision, not_replaced=tuple(not_replaced)
        )
    decided = {f.scene_id for f in new_frames} | {r.scene_id for r in new_rejections}
    kept = (r for r in manifest.rejections if not (r.retry and r.scene_id in decided))  # a retried scene is replaced
    current_frames = (swaps.get(f.scene_id, f) for f in manifest.frames)
    merged = replace(
        manifest,
        grid=grid,
        frames=tuple(sorted((*current_frames, *new_frames), key=lambda e: e.sort_key)),
        rejections=tuple(sorted((*kept, *new_rejections), key=lambda e: e.sort_key)),
        dirty_from=dirty_from,
        revision=manifest.revision + 1,
        superseded=(*manifest.superseded, *superseded),
        declined_reprocessings=tuple(sorted(declined_out.values(), key=lambda d: d.scene_id)),
    )
    report = MergeReport(
        tuple(f.scene_id for f in new_frames),
        tuple(r.scene_id for r in new_rejections),
        already,
        inserted_before,
        dirty_from,
        merged.revision,
        replaced=tuple(swaps),
        replaced_tracked=tuple(replaced_tracked),
        not_replaced=tuple(not_replaced),
        declined=tuple(d.scene_id for d in new_declined),
    )
    return merged, report


def load_manifest(store: Store, site_id: str) -> tuple[Manifest, str | None]:
    """The site's manifest and its tag, or an empty manifest and None if the site has none yet.

    A manifest that exists but cannot be parsed raises SequenceError: it is never silently replaced.
    """
    key = keys.manifest(site_id)
    try:
        data, tag = store.get_with_tag(key)
    except KeyMissing:
        return Manifest.empty(site_id), None
    return Manifest.from_json_bytes(data, site_id=site_id, where=store.url(key)), tag


def append(
    store: Store,
    site_id: str,
    *,
    frames: Sequence[FrameEntry],
    rejections: Sequence[Rejection],
    grid: Mapping[str, Any],
    data: Mapping[str, bytes],
    replacements: Sequence[Replacement] = (),
    declined: Sequence[DeclinedReprocessing] = (),
    max_attempts: int = 10,
) -> MergeReport:
    """Add scenes to a site's sequence: write their data objects, then swap the manifest (optimistically).

    `data` maps store keys (under `{site_id}/frames/`) to bytes; each key must be an object of one of the offered
    frames (or of a replacement's new entry). Objects of scenes the site already knows are not rewritten, and no
    object the manifest references (a frame's or a superseded entry's) is ever overwritten. Every object a new
    frame or a replacement references must be in `data` or already in the store, so a visible frame never points
    at nothing.

    `replacements`: newer processings of stored frames (see `merge`); their objects are written only while the
    stored entry is still `old`. `declined`: newer processings screened out (the frames are kept).

    Nothing is visible until the manifest swap succeeds. On a lost swap (another run appended first) the manifest
    is re-read and the merge redone, up to `max_attempts` swaps, then SequenceError. The returned report is that
    of the merge that was stored; scenes the other run added meanwhile show up as `already_present`, frames it
    replaced meanwhile as `not_replaced`. If two runs offer the same scene at once, both write its objects (same
    keys, whole-object replaces), one frame is kept.
    """
    check_site_id(site_id)
    if max_attempts < 1:
        raise SequenceError(f"max_attempts must be >= 1, got {max_attempts}")
    prefix = keys.frames_prefix(site_id)
    owner: dict[str, str] = {}  # object key -> scene_id of the offered frame referencing it
    offered = [*frames, *(r.new for r in replacements if isinstance(r, Replacement))]
    for f in offered:
        for key in f.objects.values():
            if not key.startswith(prefix):
                raise SequenceError(
                    f"site {site_id!r}: scene {f.scene_id!r} references {key!r}; data objects of a "
                    f"site must be under {prefix!r}"
                )
            if key in owner and owner[key] != f.scene_id:
                raise SequenceError(
                    f"site {site_id!r}: {key!r} is referenced by scenes {owner[key]!r} and "
                    f"{f.scene_id!r}; give each scene its own keys"
                )
            owner[key] = f.scene_id
    for key in data:
        validate_key(key, store_uri=store.uri)
        if key not in owner:
            raise SequenceError(
                f"site {site_id!r}: data object {key!r} is not referenced by any offered frame; "
                "nothing would ever make it visible (add it to a frame's objects or drop it)"
            )

    manifest, tag = load_manifest(store, site_id)
    # Fail fast (grid, duplicates, a replacement reusing a referenced key) before writing anything.
    _, first = merge(
        manifest, frames=frames, rejections=rejections, grid=grid, replacements=replacements, declined=declined
    )
    known = manifest.known_scene_ids()
    replacing = set(first.replaced)  # replacements that still apply to the stored entries
    visible = {k: f.scene_id for f in manifest.frames for k in f.objects.values()}
    visible.update({k: s.frame.scene_id for s in manifest.superseded for k in s.frame.objects.values()})
    check_lease(store, site_id)  # a run that lost its site lease stops before writing (LeaseLost)
    for key, blob in data.items():
        scene = owner[key]
        if scene in known and scene not in replacing:
            continue  # already decided; never touch a visible frame's objects
        if key in visible:
            raise SequenceError(
                f"site {site_id!r}: {key!r} (scene {scene!r}) is already an object of visible "
                f"scene {visible[key]!r}; refusing to overwrite it. Give each scene its own keys"
            )
        store.put(key, blob)
    for f in offered:
        if f.scene_id in known and f.scene_id not in replacing:
            continue
        for key in f.objects.values():
            if key not in data and not store.exists(key):
                raise SequenceError(
                    f"site {site_id!r}: scene {f.scene_id!r} references {store.url(key)}, which is "
                    "neither in `data` nor in the store; write it first"
                )

    stored: list[MergeReport] = []

    def change(current: Manifest | None) -> Manifest | None:
        merged, report = merge(
            current or Manifest.empty(site_id),
            frames=frames,
            rejections=rejections,
            grid=grid,
            replacements=[r for r in replacements if r.old.scene_id in replacing],  # objects written for these
            declined=declined,
        )
        stored[:] = [report]
        check_lease(store, site_id)  # before each swap
        return None if merged is current or (current is None and not report.changed) else merged

    _swap_manifest(store, site_id, change, max_attempts, "the data objects are written, run again to retry")
    report = stored[0]
    skipped = tuple(r.old.scene_id for r in replacements if r.old.scene_id not in replacing)
    return replace(report, not_replaced=tuple(sorted({*report.not_replaced, *skipped})))


def mark_tracked(
    store: Store,
    site_id: str,
    *,
    tracked_until: str,
    clear_dirty: bool,
    based_on: Manifest | None = None,
    max_attempts: int = 10,
) -> Manifest:
    """Record that tracking has processed the sequence through `tracked_until`; returns the stored manifest.

    `clear_dirty=True` says the run re-tracked from `dirty_from`. Pass `based_on`, the manifest the tracker read:
    any frame appended (or replaced by a newer processing) since then at or before `tracked_until` was not tracked,
    so `dirty_from` is set to it instead of being lost, and a `dirty_from` set since then (a correction) is kept
    (without `based_on` the caller guarantees neither happened).
    """
    until = parse_datetime(tracked_until, what="tracked_until")
    seen = {f.scene_id: f for f in based_on.frames} if based_on is not None else None

    def change(manifest: Manifest) -> Manifest | None:
        dirty = None if clear_dirty else manifest.dirty_from
        if based_on is not None and manifest.dirty_from != based_on.dirty_from:
            dirty = manifest.dirty_from  # marked dirty (a correction) while this run tracked: keep it
        if seen is not None:
            # a frame appended, or replaced by a newer processing, since the tracker read the manifest
            unseen = [f.datetime for f in manifest.frames if seen.get(f.scene_id) != f and f.sort_key[0] <= until]
            if unseen:
                dirty = min([*unseen, *([dirty] if dirty else [])], key=parse_datetime)
        if manifest.tracked_until == tracked_until and manifest.dirty_from == dirty:
            return None
        return replace(manifest, tracked_until=tracked_until, dirty_from=dirty, revision=manifest.revision + 1)

    return _update(
        store, site_id, change, max_attempts=max_attempts, action="mark it tracked", retry="run the tracker again"
    )


def mark_dirty(store: Store, site_id: str, *, dirty_from: str, max_attempts: int = 10) -> Manifest:
    """Record that tracking must re-run from `dirty_from` (a correction was added or undone on that frame)."""

    def change(manifest: Manifest) -> Manifest | None:
        dirty = min([dirty_from, *([manifest.dirty_from] if manifest.dirty_from else [])], key=parse_datetime)
        return (
            None
            if manifest.dirty_from == dirty
            else replace(manifest, dirty_from=dirty, revision=manifest.revision + 1)
        )

    return _update(store, site_id, change, max_attempts=max_attempts, action="mark it dirty", retry="try again")


def _update(
    store: Store,
    site_id: str,
    change: Callable[[Manifest], Manifest | None],
    *,
    max_attempts: int,
    action: str,
    retry: str,
) -> Manifest:
    """Optimistic read-change-swap of a manifest that exists; `change` returns None when nothing is to change."""
    check_site_id(site_id)

    def guarded(current: Manifest | None) -> Manifest | None:
        if current is None:
            raise SequenceError(f"site {site_id!r} has no manifest in store {store.uri}; nothing to {action}")
        check_lease(store, site_id)  # before each swap
        return change(current)

    out = _swap_manifest(store, site_id, guarded, max_attempts, retry)
    assert out is not None  # guarded() refuses a missing manifest
    return out


def _swap_manifest(
    store: Store, site_id: str, change: Callable[[Manifest | None], Manifest | None], max_attempts: int, retry: str
) -> Manifest | None:
    """The manifest's read–change–conditional-write (scarmon.store.documents), with the sequence's own error."""
    try:
        return update_document(
            store,
            keys.manifest(site_id),
            change,
            parse=_parser(site_id, store),
            dump=_dump_manifest,
            what="sequence manifest",
            max_attempts=max_attempts,
        )
    except StillConflicting:
        raise SequenceError(
            f"site {site_id!r}: could not swap {store.url(keys.manifest(site_id))} after "
            f"{max_attempts} attempts (other runs kept writing it); {retry}"
        ) from None


def _parser(site_id: str, store: Store) -> Callable[[bytes], Manifest]:
    where = store.url(keys.manifest(site_id))
    return lambda data: Manifest.from_json_bytes(data, site_id=site_id, where=where)


def _dump_manifest(manifest: Manifest) -> bytes:
    return manifest.to_json_bytes()


__all__ = [
    "FORMAT",
    "DeclinedReprocessing",
    "FrameEntry",
    "Manifest",
    "MergeReport",
    "Rejection",
    "Replacement",
    "Superseded",
    "SequenceError",
    "append",
    "check_site_id",
    "load_manifest",
    "mark_dirty",
    "mark_tracked",
    "merge",
    "parse_datetime",
]
