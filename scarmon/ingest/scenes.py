"""Scenes: the items of one satellite pass over a site (several MGRS tiles, possibly several UTM zones)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from scarmon.ingest.discovery import parse_datetime

ASSET_KEYS = {"red": ("B04", "red"), "nir": ("B08", "nir"), "scl": ("SCL", "scl")}
"""Band → asset keys tried in order: Planetary Computer names first, Earth Search names second."""


@dataclass(frozen=True)
class Scene:
    id: str                       # stable across runs and catalogs: platform, date, relative orbit
    datetime: str                 # ISO, UTC, earliest item
    items: tuple[dict[str, Any], ...]

    @property
    def date(self) -> str:
        return self.datetime[:10]

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(i["id"] for i in self.items)

    @property
    def processing_baseline(self) -> str | None:
        values = sorted({str(b) for i in self.items if (b := i["properties"].get("s2:processing_baseline"))})
        return ",".join(values) or None


def asset_key(item: dict[str, Any], band: str) -> str | None:
    """The item's asset key for a band ('red', 'nir', 'scl'), or None when the item lacks it."""
    return next((k for k in ASSET_KEYS[band] if k in item.get("assets", {})), None)


def missing_bands(item: dict[str, Any]) -> list[str]:
    return [ASSET_KEYS[b][0] for b in ASSET_KEYS if asset_key(item, b) is None]


def scene_id(item: dict[str, Any]) -> str:
    props = item["properties"]
    when = parse_datetime(props["datetime"])
    platform = str(props.get("platform", "")).lower()
    m = re.search(r"sentinel-?2([abcd])", platform)
    sat = f"S2{m.group(1).upper()}" if m else item["id"][:3].upper()
    orbit = props.get("sat:relative_orbit")
    if orbit is None and (m := re.search(r"_R(\d{3})_", item["id"])):
        orbit = int(m.group(1))
    return f"{sat}_{when:%Y%m%d}" + (f"_R{int(orbit):03d}" if orbit is not None else "")


def group_scenes(items: Iterable[dict[str, Any]]) -> list[Scene]:
    """Group items into scenes, keeping the newest processing of each tile (catalogs list reprocessed duplicates)."""
    by_scene: dict[str, dict[str, dict[str, Any]]] = {}
    for item in items:
        tiles = by_scene.setdefault(scene_id(item), {})
        tile = _tile(item)
        if tile not in tiles or _generation(item) > _generation(tiles[tile]):
            tiles[tile] = item
    scenes = []
    for sid, tiles in by_scene.items():
        ordered = tuple(sorted(tiles.values(), key=lambda i: i["id"]))
        first = min(parse_datetime(i["properties"]["datetime"]) for i in ordered)
        scenes.append(Scene(sid, first.isoformat().replace("+00:00", "Z"), ordered))
    return sorted(scenes, key=lambda s: (s.datetime, s.id))


def _tile(item: dict[str, Any]) -> str:
    props = item["properties"]
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"])
    parts = [props.get(k) for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")]
    return "".join(str(p) for p in parts) if all(parts) else item["id"]


def _generation(item: dict[str, Any]) -> str:
    props = item["properties"]
    return str(props.get("s2:generation_time") or props.get("updated") or item["id"])
