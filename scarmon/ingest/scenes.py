"""Scenes: the items of one satellite pass over a site (several MGRS tiles, possibly several UTM zones).

A scene id names the acquisition, not the catalog's item: platform, sensing date and relative orbit
(`S2A_20240412_R098`), so Planetary Computer, Earth Search v0 (`sentinel:product_id`), v1 `sentinel-2-l2a` and
`sentinel-2-c1-l2a` (orbit only in `s2:product_uri` / `s2:datatake_id`) give the same id for the same pass.
Stores written before the orbit was read on Earth Search hold ids without it (`S2A_20240412`): `stored_id`
maps a scene to the id a store already uses for it, so switching catalogs appends nothing twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shapely.geometry import Polygon, shape

from scarmon.dates import optional_utc_datetime as parse_datetime
from scarmon.ingest.radiometry import processing_baseline

ASSET_KEYS = {"red": ("B04", "red"), "nir": ("B08", "nir"), "scl": ("SCL", "scl")}
"""Band → asset keys tried in order: Planetary Computer names first, Earth Search names second."""

_PRODUCT = re.compile(r"(?:^|_)MSIL2A_(\d{8})T\d{6}_(?:N\d{4}_)?R(\d{3})_")
"""ESA product names: S2A_MSIL2A_20240412T173901_N0510_R098_T13TDE_20240413T003752(.SAFE); PC item ids alike."""
_DATATAKE = re.compile(r"^GS2([AB])_(\d{8})T\d{6}_(\d{6})_")
"""GS2A_20231008T175231_043324_N05.09: platform, sensing date, absolute orbit."""
_ORBIT_SHIFT = {"A": 3, "B": -26}
"""Relative orbit = (absolute orbit + shift) mod 143 (0 → 143): checked on the real items (S2A 043324 → R141,
045998 → R098; S2B 012081 → R043, 037185 → R122); used only when no product name carries the orbit."""
_SCENE_ID = re.compile(r"^(S2[A-D]_\d{8})(?:_R(\d{3}))?$")


@dataclass(frozen=True)
class Scene:
    id: str  # stable across runs and catalogs: platform, date, relative orbit
    datetime: str  # ISO, UTC, earliest item
    items: tuple[dict[str, Any], ...]

    @property
    def date(self) -> str:
        return self.datetime[:10]

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(str(i["id"]) for i in self.items)

    @property
    def processing_baseline(self) -> str | None:
        values = sorted({b for i in self.items if (b := processing_baseline(i))})
        return ",".join(values) or None


def asset_key(item: Mapping[str, Any], band: str) -> str | None:
    """The item's asset key for a band ('red', 'nir', 'scl'), or None when the item lacks it (or has no href)."""
    assets = item.get("assets") or {}
    return next(
        (
            k
            for k in ASSET_KEYS[band]
            if isinstance(assets.get(k), dict) and isinstance(assets[k].get("href"), str) and assets[k]["href"]
        ),
        None,
    )


def missing_bands(item: Mapping[str, Any]) -> list[str]:
    return [ASSET_KEYS[b][0] for b in ASSET_KEYS if asset_key(item, b) is None]


def item_problem(item: Any) -> str | None:
    """Why an item cannot be used at all (not a Feature object, no id, no usable datetime), or None if it can."""
    if not isinstance(item, dict):
        return f"a feature that is not an object ({type(item).__name__})"
    if not isinstance(item.get("id"), str) or not item["id"]:
        return "a feature without an id"
    props = item.get("properties")
    if not isinstance(props, dict):
        return f"item {item['id']}: properties is not an object"
    try:
        when = parse_datetime(props.get("datetime"))
    except (TypeError, ValueError, AttributeError):
        when = None
    if when is None:
        return f"item {item['id']}: datetime {props.get('datetime')!r} is not an ISO 8601 datetime"
    if item.get("assets") is not None and not isinstance(item["assets"], dict):
        return f"item {item['id']}: assets is not an object"
    return None


def _product_names(item: Mapping[str, Any]) -> list[str]:
    props = item["properties"]
    names = [props.get("s2:product_uri"), props.get("sentinel:product_id"), item.get("id")]
    return [n for n in names if isinstance(n, str)]


def sensing_date(item: Mapping[str, Any]) -> dt.date:
    """The datatake's sensing date (the product name's), else the item datetime's: Earth Search's datetime is the
    tile's sensing time, Planetary Computer's the datatake start; near midnight only the product name agrees."""
    for name in _product_names(item):
        if m := _PRODUCT.search(name):
            return dt.datetime.strptime(m.group(1), "%Y%m%d").date()
    when = parse_datetime(item["properties"]["datetime"])
    assert when is not None  # item_problem() ran before
    return when.date()


def relative_orbit(item: Mapping[str, Any]) -> int | None:
    """Relative orbit from `sat:relative_orbit`, a product name (`s2:product_uri`, `sentinel:product_id`, a PC item
    id) or the absolute orbit of `s2:datatake_id`; None when the item says nothing about it."""
    props = item["properties"]
    orbit = props.get("sat:relative_orbit")
    if isinstance(orbit, (int, float, str)) and not isinstance(orbit, bool) and str(orbit).strip().isdigit():
        return int(orbit)
    for name in _product_names(item):
        if m := _PRODUCT.search(name):
            return int(m.group(2))
    if isinstance(props.get("s2:datatake_id"), str) and (m := _DATATAKE.match(props["s2:datatake_id"])):
        return (int(m.group(3)) + _ORBIT_SHIFT[m.group(1)]) % 143 or 143
    return None


def scene_id(item: Mapping[str, Any]) -> str:
    props = item["properties"]
    platform = str(props.get("platform", "")).lower()
    m = re.search(r"sentinel-?2([abcd])", platform)
    sat = f"S2{m.group(1).upper()}" if m else str(item["id"])[:3].upper()
    orbit = relative_orbit(item)
    return f"{sat}_{sensing_date(item):%Y%m%d}" + (f"_R{orbit:03d}" if orbit is not None else "")


def stored_id(sid: str, stored: Collection[str]) -> str:
    """The id under which a store already holds this scene, else `sid` itself.

    An orbit-less id (Earth Search, before the orbit was read from `s2:product_uri`) and the full id of the same
    platform and date name the same pass over a site: a satellite passes a 100 km² site at most once a day.
    """
    if sid in stored:
        return sid
    m = _SCENE_ID.match(sid)
    if not m:
        return sid
    base = m.group(1)
    if m.group(2) is not None and base in stored:
        return base
    if m.group(2) is None:
        full = sorted(s for s in stored if s.startswith(base + "_R") and _SCENE_ID.match(s))
        if full:
            return full[0]
    return sid


def group_scenes(items: Iterable[dict[str, Any]]) -> list[Scene]:
    """Group items into scenes, keeping the newest processing of each tile (catalogs list reprocessed duplicates).

    Items must have passed `item_problem` (discovery drops the others and records why).
    """
    by_scene: dict[str, dict[str, dict[str, Any]]] = {}
    for item in items:
        tiles = by_scene.setdefault(scene_id(item), {})
        tile = _tile(item)
        if tile not in tiles or _generation(item) > _generation(tiles[tile]):
            tiles[tile] = item
    scenes = []
    for sid, tiles in by_scene.items():
        ordered = tuple(sorted(tiles.values(), key=lambda i: str(i["id"])))
        first = min(_when(i) for i in ordered)
        scenes.append(Scene(sid, first.isoformat().replace("+00:00", "Z"), ordered))
    return sorted(scenes, key=lambda s: (s.datetime, s.id))


def covering_first(scene: Scene, aoi_lonlat: Polygon) -> Scene:
    """Pure: the scene with the items whose footprint covers the AOI first, the order otherwise kept. The mosaic takes
    each pixel from the first item with data and stops reading once the site has data everywhere, so a tile that
    covers the site alone spares the other tiles' reads whatever its place in id order (issue 12)."""
    items = sorted(scene.items, key=lambda i: not _covers(i, aoi_lonlat))
    return replace(scene, items=tuple(items))


def _covers(item: Mapping[str, Any], aoi_lonlat: Polygon) -> bool:
    geometry = item.get("geometry")
    return bool(geometry) and bool(shape(geometry).contains(aoi_lonlat))


def _when(item: Mapping[str, Any]) -> dt.datetime:
    when = parse_datetime(item["properties"]["datetime"])
    assert when is not None  # item_problem() ran before
    return when


def _tile(item: Mapping[str, Any]) -> str:
    props = item["properties"]
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"])
    parts = [props.get(k) for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")]
    if all(parts):
        return "".join(str(p) for p in parts)
    for name in _product_names(item):
        if m := re.search(r"_T(\d{2}[A-Z]{3})_", name):
            return m.group(1)
    if m := re.match(r"^S2[A-D]_T?(\d{1,2}[A-Z]{3})_", str(item["id"])):
        return m.group(1).zfill(5)
    return str(item["id"])


def _generation(item: Mapping[str, Any]) -> tuple[str, str, int, str, str]:
    """Order of processings of one tile: generation time, baseline, Earth Search sequence (`_1_` reprocesses `_0_`,
    often with the same generation time), update time, id."""
    props = item["properties"]
    seq = props.get("s2:sequence", props.get("sentinel:sequence"))
    try:
        sequence = int(seq) if seq is not None else 0
    except (TypeError, ValueError):
        sequence = 0
    if sequence == 0 and (m := re.search(r"_(\d+)_L2A$", str(item["id"]))):
        sequence = int(m.group(1))
    return (
        str(props.get("s2:generation_time") or ""),
        processing_baseline(item) or "",
        sequence,
        str(props.get("updated") or ""),
        str(item["id"]),
    )
