"""Every object key scarmon writes, in one place. `docs/store-layout.md` is generated from `LAYOUT` below
(`python -m scarmon.store.keys > docs/store-layout.md`; a test keeps it current).

A store is a local folder or `s3://bucket/prefix`; the keys are the same in both. Site keys live under the site id;
store-wide keys (the dashboard, the site index, the STAC root) at the top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class FrameRef(Protocol):
    """What a per-frame key needs from a frame: its acquisition date and scene id."""

    @property
    def date(self) -> str: ...

    @property
    def scene_id(self) -> str: ...


def check_site_id(site_id: str) -> str:
    """A site id is a key prefix: lowercase letters, digits, '-' and '_' (no '/', no '..')."""
    if not isinstance(site_id, str) or not SITE_ID.match(site_id):
        raise ValueError(
            f"site id {site_id!r} is not valid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return site_id


def frame_stem(frame: FrameRef | Mapping[str, Any]) -> str:
    """`{date}_{scene_id}` of a frame (a FrameEntry, or a frame row of the products index)."""
    if isinstance(frame, Mapping):
        return f"{frame['date']}_{frame['scene_id']}"
    return f"{frame.date}_{frame.scene_id}"


# --- the sequence (ingest) ---------------------------------------------------------------------------------------
def manifest(site_id: str) -> str:
    return f"{site_id}/manifest.json"


def frames_prefix(site_id: str) -> str:
    return f"{site_id}/frames/"


def frame_base(site_id: str, date: str, scene_id: str, processing: str | None = None) -> str:
    """Key of a frame's objects without the extension (`.tif` NDVI COG, `.png` video frame).

    `processing`: the processing baseline(s) of a NEWER processing that replaces a stored frame ("05.11", or
    "04.00,05.11" for a pass whose tiles differ): its objects get their own keys (`..._N0511`, `..._N0400-N0511`),
    so the objects of the processing it replaces are never overwritten (the manifest lists them as superseded).
    A frame's first processing keeps the plain key."""
    base = f"{frames_prefix(site_id)}{date}_{scene_id}"
    return f"{base}_{processing_tag(processing)}" if processing else base


def processing_tag(processing: str) -> str:
    """`N0511` for "05.11" (ESA's product-name spelling), `N0400-N0511` for "04.00,05.11"; only [A-Za-z0-9-]."""
    parts = [re.sub(r"[^0-9A-Za-z]", "", p) for p in str(processing).split(",")]
    tag = "-".join(f"N{p}" for p in parts if p)
    if not tag:
        raise ValueError(f"processing baseline {processing!r} names no processing (expected e.g. '05.11')")
    return tag


# --- tracking ----------------------------------------------------------------------------------------------------
def mask(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    return f"{site_id}/masks/{frame_stem(frame)}.tif"


def tracker_state(site_id: str, tracker: str, frame: FrameRef | Mapping[str, Any]) -> str:
    return f"{tracker_states_prefix(site_id, tracker)}{frame_stem(frame)}.state"


def tracker_states_prefix(site_id: str, tracker: str) -> str:
    return f"{site_id}/tracking/{tracker}/"


def tracker_identity(site_id: str) -> str:
    return f"{site_id}/tracking/tracker.json"


def corrections(site_id: str) -> str:
    return f"{site_id}/corrections.json"


def series_csv(site_id: str) -> str:
    return f"{site_id}/series.csv"


def series_json(site_id: str) -> str:
    return f"{site_id}/series.json"


# --- alerts ------------------------------------------------------------------------------------------------------
def alert_state(site_id: str) -> str:
    return f"{site_id}/alerts/state.json"


def alert_history(site_id: str) -> str:
    return f"{site_id}/alerts.jsonl"


def outbox_prefix(site_id: str) -> str:
    return f"{site_id}/alerts/outbox/"


def outbox_entry(site_id: str, event_id: str) -> str:
    return f"{outbox_prefix(site_id)}{event_id}.json"


def sent_prefix(site_id: str) -> str:
    return f"{site_id}/alerts/sent/"


def sent_entry(site_id: str, event_id: str) -> str:
    return f"{sent_prefix(site_id)}{event_id}.json"


# --- service -----------------------------------------------------------------------------------------------------
def lock(site_id: str) -> str:
    return f"{site_id}/lock.json"


def status(site_id: str) -> str:
    return f"{site_id}/status.json"


# --- products ----------------------------------------------------------------------------------------------------
def products_prefix(site_id: str) -> str:
    return f"{site_id}/products/"


def products_index(site_id: str) -> str:
    return products_prefix(site_id) + "index.json"


def quicklook(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    return products_prefix(site_id) + f"quicklooks/{frame_stem(frame)}.png"


def polygon(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    return products_prefix(site_id) + f"polygons/{frame_stem(frame)}.geojson"


def product_mask(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    """The published mask: 0 not scar, 1 scar, 255 not observed / outside the AOI; colour table and tags."""
    return products_prefix(site_id) + f"masks/{frame_stem(frame)}.tif"


def map_image(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    """The frame's NDVI in colour, warped to Web Mercator for the dashboard map (bounds in the products index)."""
    return products_prefix(site_id) + f"map/{frame_stem(frame)}.png"


def stac_collection(site_id: str) -> str:
    return f"{site_id}/stac/collection.json"


def stac_item(site_id: str, frame: FrameRef | Mapping[str, Any]) -> str:
    return f"{site_id}/stac/items/{frame_stem(frame)}.json"


SITES_INDEX = "sites.json"
ROOT_CATALOG = "catalog.json"
DASHBOARD_PREFIX = "dashboard/"
DASHBOARD_CONFIG = DASHBOARD_PREFIX + "config.json"

# key pattern, written by, what: the table of docs/store-layout.md.
LAYOUT: tuple[tuple[str, str, str], ...] = (
    (
        "{site}/manifest.json",
        "ingest, track, refine",
        "the sequence: grid, frames (date, scene id, item ids, baseline, coverage, clear fraction, object keys), "
        "rejections with reasons and fractions (`retry: true` = unreadable this time, searched again), "
        "`tracked_until`, `dirty_from`, revision; once a newer processing replaced a frame, `superseded` (the "
        "replaced entries with their object keys, when and by which baseline) and `declined_reprocessings` (newer "
        "processings screened out: the frame was kept)",
    ),
    ("{site}/frames/{date}_{scene}.tif", "ingest", "NDVI on the site grid, int16 × 1e-4 COG, nodata = not clear"),
    ("{site}/frames/{date}_{scene}.png", "ingest", "the 8-bit video frame (fixed NDVI → gray mapping, −0.2 … 0.8)"),
    (
        "{site}/frames/{date}_{scene}_N{baseline}.tif, .png",
        "ingest",
        "the same two objects from a newer processing of a stored frame's acquisition (e.g. `_N0511`), found by the "
        "deep re-scan; the manifest's frame then points at them and lists the entry it replaced under `superseded`. "
        "The replaced processing's objects are kept, never overwritten",
    ),
    ("{site}/masks/{date}_{scene}.tif", "track", "the scar mask, uint8 COG on the site grid"),
    ("{site}/tracking/tracker.json", "track", "which tracker (and which weights, by sha256) produced the states"),
    (
        "{site}/tracking/{tracker}/{date}_{scene}.state",
        "track",
        "the state to resume after that frame; kept for the newest 8 frames and every 10th",
    ),
    ("{site}/corrections.json", "refine, ui", "correction clicks (id, lon, lat, label, date, added)"),
    (
        "{site}/series.csv, series.json",
        "track",
        "per frame: area, change, same-season change, expansion azimuth, advance rate, clear fractions, "
        "low-confidence flag and reason",
    ),
    ("{site}/alerts/state.json", "alert", "the confirmation state machine's state"),
    (
        "{site}/alerts.jsonl",
        "alert, refine",
        "one JSON object per alert event (site, date, level, state, area_m2, baseline_m2, …; `note` says how it was "
        "recorded: backfill, refine)",
    ),
    (
        "{site}/alerts/outbox/{id}.json, alerts/sent/{id}.json",
        "notify",
        "deliveries pending (retried every tick) and done",
    ),
    ("{site}/lock.json", "every command that writes a site", "one run per site at a time (owner, since, ttl_s)"),
    ("{site}/status.json", "monitor", "the last tick, for people and the dashboard"),
    (
        "{site}/products/…",
        "publish",
        "`index.json` (swapped last), polygons (per frame GeoJSON, all frames GeoJSON/GeoParquet), quicklooks, plots",
    ),
    (
        "{site}/products/masks/{date}_{scene}.tif",
        "publish",
        "the published mask COG: 0 not scar, 1 scar, 255 not observed or outside the AOI (nodata), colour table, tags",
    ),
    ("{site}/products/map/{date}_{scene}.png", "publish", "NDVI in colour in Web Mercator, for the dashboard map"),
    ("{site}/stac/collection.json, stac/items/*.json", "publish", "the STAC catalog of the products"),
    (
        "catalog.json, sites.json, dashboard/",
        "publish",
        "the store-wide STAC root, the dashboard's site index and the static dashboard",
    ),
    ("dashboard/config.json", "publish", "dashboard settings: the optional basemap ($SCARMON_BASEMAP_URL)"),
    (".scarmon-*", "local stores", "temporary files and lock files; never listed"),
)

HEADER = """# What scarmon keeps in a store

Generated from `scarmon/store/keys.py` (`python -m scarmon.store.keys > docs/store-layout.md`): change the keys
there, not here.

A store is a local folder or `s3://bucket/prefix`; the keys are the same in both. Every object is written whole
(atomic rename locally, a single PUT on S3). Documents that others read and change — the sequence manifest, the
corrections, the alert history, the products index, `sites.json`, `catalog.json` — go through one helper,
`scarmon.store.documents.update_json`: read, change, conditional put (`If-Match` / `If-None-Match: *` on S3, a lock
file plus compare-and-rename locally), re-read and retry with backoff on a conflict. A document that exists but
cannot be parsed is refused with its key named, never silently replaced. A run killed at any moment leaves the
previous state readable.
"""


def layout_markdown() -> str:
    rows = "\n".join(f"| `{k}` | {who} | {what} |" for k, who, what in LAYOUT)
    return f"{HEADER}\n| key | written by | what |\n|---|---|---|\n{rows}\n"


if __name__ == "__main__":
    print(layout_markdown(), end="")
