"""Correction prompts ("interactive refinement"): clicks people add on any frame after tracking.

Kept in the store beside the sequence (`{site}/corrections.json`), not in the site file, so the service can
take them from the CLI or the browser while it runs. Adding or undoing one marks tracking dirty from its frame.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from shapely.geometry import Point

from scarmon.errors import ScarmonError
from scarmon.site import Prompt, Site
from scarmon.store import keys
from scarmon.store.backends import Store
from scarmon.store.documents import read_document, update_document
from scarmon.store.sequence import FrameEntry, SequenceError, load_manifest, mark_dirty


class CorrectionError(ScarmonError, ValueError):
    """A correction that cannot be applied; says why and what to do."""


def _parse(data: bytes) -> list[dict[str, Any]]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("corrections"), list):
        raise ValueError("no 'corrections' list")
    return list(doc["corrections"])


def _dump(corrections: list[dict[str, Any]]) -> bytes:
    return json.dumps({"corrections": corrections}, indent=1).encode()


def _read(store: Store, site_id: str) -> tuple[list[dict[str, Any]], str | None]:
    found, tag = read_document(store, keys.corrections(site_id), _parse, what="corrections file")
    return found or [], tag


def load_corrections(store: Store, site_id: str) -> list[Prompt]:
    return [Prompt(lon=c["lon"], lat=c["lat"], label=c["label"], date=c["date"]) for c in _read(store, site_id)[0]]


def list_corrections(store: Store, site_id: str) -> list[dict[str, Any]]:
    return _read(store, site_id)[0]


def _update(
    store: Store, site_id: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    new = update_document(
        store,
        keys.corrections(site_id),
        lambda cur: change(list(cur or [])),
        parse=_parse,
        dump=_dump,
        what="corrections file",
    )
    return new or []


def add_corrections(store: Store, site: Site, date: dt.date, points: Sequence[tuple[float, float, int]]) -> list[str]:
    """Store clicks (lon, lat, label) on the frame of `date` and mark tracking dirty from that frame."""
    frame = _frame_on(store, site, date)
    for lon, lat, label in points:
        if label not in (0, 1):
            raise CorrectionError(f"label must be 1 (scar) or 0 (not scar), got {label}")
        if not site.polygon.contains(Point(lon, lat)):
            raise CorrectionError(f"point lon={lon}, lat={lat} lies outside the AOI of site {site.id}")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ids = [uuid.uuid4().hex[:8] for _ in points]
    new: list[dict[str, Any]] = [
        {"id": cid, "lon": lon, "lat": lat, "label": label, "date": frame.date, "added": now}
        for cid, (lon, lat, label) in zip(ids, points, strict=True)
    ]
    _update(store, site.id, lambda cur: cur + new)
    mark_dirty(store, site.id, dirty_from=frame.datetime)
    return ids


def undo_correction(store: Store, site: Site, correction_id: str) -> dict[str, Any]:
    """Remove one correction and mark tracking dirty from its frame."""
    found = next((c for c in list_corrections(store, site.id) if c["id"] == correction_id), None)
    if found is None:
        raise CorrectionError(f"site {site.id} has no correction {correction_id!r}; `scarmon refine --list` shows them")
    _update(store, site.id, lambda cur: [c for c in cur if c["id"] != correction_id])
    mark_dirty(store, site.id, dirty_from=_frame_on(store, site, dt.date.fromisoformat(found["date"])).datetime)
    return found


def _frame_on(store: Store, site: Site, date: dt.date) -> FrameEntry:
    manifest, _ = load_manifest(store, site.id)
    day = date.isoformat()
    frame = next((f for f in manifest.frames if f.date == day), None)
    if frame is None:
        near = sorted(manifest.frames, key=lambda f: abs((dt.date.fromisoformat(f.date) - date).days))[:3]
        hint = ", ".join(f.date for f in near) or "none: ingest scenes first"
        raise CorrectionError(f"site {site.id} has no frame on {day}; nearest frames: {hint}")
    return frame


__all__ = [
    "CorrectionError",
    "SequenceError",
    "add_corrections",
    "list_corrections",
    "load_corrections",
    "undo_correction",
]
