"""Products of a site for GIS and dashboards, written into the store next to the sequence (DESIGN.md, Outputs).

Layout (keys relative to the store root; `S` is the site id):

- `S/masks/*.tif`                       the tracker's mask COGs (internal; the products carry their own masks)
- `S/series.csv`, `S/series.json`       the area series, written by tracking (referenced)
- `S/products/masks/{frame}.tif`        the published mask COG: 0 not scar, 1 scar, 255 (nodata) not observed or
                                         outside the AOI; a colour table and tags (site, date, scene, tracker)
- `S/products/polygons/{frame}.geojson` the scar polygon of one frame (lon/lat, RFC 7946, simplified by half a
                                         pixel, 7 decimals)
- `S/products/polygons.geojson`         all frames, one feature per frame (lon/lat, as above)
- `S/products/polygons.parquet`         the same as GeoParquet in the site grid's UTM CRS (exact pixel-edge
                                         polygons: areas equal the measured areas; date/datetime typed columns)
- `S/products/quicklooks/{frame}.png`   NDVI in colour with the scar boundary in red
- `S/products/map/{frame}.png`          NDVI in colour warped to Web Mercator, for the dashboard map
- `S/products/plots/*.png`              the paper's plots (matplotlib)
- `S/stac/...`                          the STAC collection of all of it (scarmon.products.stac)
- `S/products/index.json`               THE products manifest: the only object that makes products visible
- `sites.json`, `dashboard/`            the store-wide site list and the static dashboard (scarmon/dashboard)

Incremental: `index.json` records for every frame the content tag of its inputs (mask bytes, series row); a run
rebuilds a frame's polygon, quicklook and STAC item only when those changed, and a plot only when its inputs did.

Crash safety: every object is written whole (atomic puts), and `index.json` is swapped last with a conditional put.
A run that fails half-way leaves the previous index in place; every object it references still exists and reads
(an object rewritten before the failure is complete, just newer), and the next run redoes the work because the
stored tags did not advance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scarmon.errors import ScarmonError
from scarmon.grid import SiteGrid
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import Conflict, KeyMissing, Store
from scarmon.store.documents import update_document
from scarmon.store.sequence import FrameEntry, load_manifest
from scarmon.tracking.pipeline import read_series

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.figure import Figure
    from shapely.geometry.base import BaseGeometry

log = logging.getLogger(__name__)

FORMAT = "scarmon.products/1"
PRODUCTS_VERSION = "9"  # bump to force every product to be rebuilt (a change of drawing code, say)
QUICKLOOK_MAX_PX = 1024
MAP_MAX_PX = 1024
COORD_DECIMALS = 7  # GeoJSON coordinates: 7 decimals of a degree is ~1 cm
RECENT_ALERT_DAYS = 120  # an alert that ended up to this many days before the newest frame is 'recent'
MASK_NODATA = 255
MASK_COLORS = {0: (235, 235, 235, 255), 1: (220, 0, 0, 255), MASK_NODATA: (0, 0, 0, 0)}
MASK_VALUES: tuple[dict[str, Any], ...] = (
    {"value": 0, "name": "not-scar", "description": "observed, not scar"},
    {"value": 1, "name": "scar", "description": "scar (bare ground tracked as the landslide)"},
    {
        "value": MASK_NODATA,
        "name": "not-observed",
        "description": "no data: not observed on this date (cloud, shadow, snow) or outside the AOI",
    },
)
NDVI_RANGE = (-0.2, 0.9)  # fixed colour mapping, the same for every frame (never per-frame min-max)
LEVELS = ("none", "watch", "warning", "alarm")
LEVEL_COLORS = {"watch": "#e6a700", "warning": "#e4572e", "alarm": "#b0003a"}
DASHBOARD_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "vendor/leaflet/leaflet.js": "text/javascript; charset=utf-8",
    "vendor/leaflet/leaflet.css": "text/css; charset=utf-8",
    "vendor/leaflet/images/layers.png": "image/png",
    "vendor/leaflet/images/layers-2x.png": "image/png",
    "vendor/leaflet/LICENSE": "text/plain; charset=utf-8",
}
FINAL_STATES = {"finished", "reset", "cleared", "closed", "none", "resolved"}


class ProductsError(ScarmonError):
    """Products cannot be published as asked; the message says which site/key and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# keys

PLOTS = {
    "area_series": "plots/area_series.png",
    "seasonal_panels": "plots/seasonal_panels.png",
    "same_season_boundaries": "plots/same_season_boundaries.png",
}


def _rel(site_id: str, key: str) -> str:
    """A key relative to the site folder (what index.json stores; the dashboard resolves it against the site URL)."""
    prefix = f"{site_id}/"
    if not key.startswith(prefix):
        raise ProductsError(f"{key!r} is not under {prefix!r}")
    return key[len(prefix) :]


def _tag(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------------------
# alerts (scarmon.alerts writes them; absence means "no alerts")


def read_alerts(store: Store, site_id: str) -> list[dict[str, Any]]:
    """Alert events from `{site}/alerts.jsonl`, oldest first; malformed lines are skipped with a warning."""
    try:
        data = store.get(keys.alert_history(site_id))
    except KeyMissing:
        return []
    events: list[dict[str, Any]] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            log.warning("site %s: alerts.jsonl line %d is not JSON; skipped", site_id, n)
            continue
        if isinstance(ev, dict) and isinstance(ev.get("date"), str):
            events.append(ev)
    return events


def current_alert_level(store: Store, site_id: str, events: list[dict[str, Any]]) -> str:
    """The site's alert level now: from the stored alert state if there is one, else from the last event."""
    try:
        state = json.loads(store.get(keys.alert_state(site_id)))
    except (KeyMissing, ValueError):
        state = None
    if isinstance(state, dict):
        if str(state.get("status", "")).lower() == "none":
            return "none"
        level = state.get("level_name", state.get("level"))
        if isinstance(level, int) and not isinstance(level, bool) and 0 <= level < len(LEVELS):
            return LEVELS[level]
        if isinstance(level, str):
            return level
    if not events:
        return "none"
    last = events[-1]
    if str(last.get("state", "")).lower() in FINAL_STATES:
        return "none"
    return str(last.get("level") or "none")


CONFIRMED_EVENTS = {"confirmed", "escalating", "escalated", "finished"}


def recent_alert(
    events: list[dict[str, Any]], reference_date: str | None, days: int = RECENT_ALERT_DAYS
) -> dict[str, Any] | None:
    """The highest confirmed alert whose last event lies within `days` before `reference_date` (the newest frame),
    so that a finished ALARM still shows as 'recent alarm' instead of a plain green 'none'. Provisional alerts that
    were reset never count. None when there is none."""
    if not events or not reference_date:
        return None
    try:
        ref = dt.date.fromisoformat(reference_date[:10])
    except ValueError:
        return None
    best: dict[str, Any] | None = None
    for ev in events:
        try:
            d = dt.date.fromisoformat(str(ev.get("date"))[:10])
        except ValueError:
            continue
        if not 0 <= (ref - d).days <= days:
            continue
        if str(ev.get("event", "")) not in CONFIRMED_EVENTS and str(ev.get("state", "")) not in CONFIRMED_EVENTS:
            continue
        level = str(ev.get("level") or "watch")
        rank = LEVELS.index(level) if level in LEVELS else 0
        if best is None or rank >= LEVELS.index(best["level"]):
            best = {
                "level": level if level in LEVELS else "watch",
                "date": str(ev["date"])[:10],
                "event": str(ev.get("event", "")),
                "state": str(ev.get("state", "")),
                "first_date": str(ev.get("first_date") or ev["date"])[:10],
            }
    if best is not None:  # the latest event of the alert tells whether it is over
        last = [ev for ev in events if str(ev.get("date", ""))[:10] >= best["date"]]
        if last:
            best["state"] = str(last[-1].get("state", best["state"]))
            best["last_date"] = str(last[-1].get("date"))[:10]
    return best


# ---------------------------------------------------------------------------------------------------------------
# geometry


def mask_to_pixel_polygon(mask: np.ndarray) -> BaseGeometry:
    """The mask as a shapely (Multi)Polygon in pixel corner coordinates (x = column, y = row), exact pixel edges."""
    from rasterio.features import shapes
    from shapely.geometry import MultiPolygon, shape

    m = np.ascontiguousarray(mask.astype(np.uint8))
    polys = [shape(geom) for geom, value in shapes(m, mask=m.astype(bool), connectivity=4) if value == 1]
    if not polys:
        return MultiPolygon()
    return MultiPolygon(polys) if len(polys) > 1 else polys[0]


def pixel_to_grid(geom: BaseGeometry, grid: SiteGrid) -> BaseGeometry:
    from shapely import affinity

    r = grid.resolution
    return affinity.affine_transform(geom, [r, 0.0, 0.0, -r, grid.x0, grid.y0])


def grid_to_pixel(geom: BaseGeometry, grid: SiteGrid) -> BaseGeometry:
    from shapely import affinity

    r = grid.resolution
    return affinity.affine_transform(geom, [1 / r, 0.0, 0.0, -1 / r, -grid.x0 / r, grid.y0 / r])


def boundary_rings(geom: BaseGeometry, tolerance: float = 0.75) -> list[list[list[float]]]:
    """Simplified rings (exteriors and holes) in pixel coordinates, for drawing in the dashboard."""
    if geom.is_empty:
        return []
    simple = geom.simplify(tolerance, preserve_topology=True)
    polys = list(getattr(simple, "geoms", [simple]))
    rings = []
    for p in polys:
        for ring in (p.exterior, *p.interiors):
            rings.append([[round(x, 1), round(y, 1)] for x, y in ring.coords])
    return rings


def round_coords(obj: Any, ndigits: int = COORD_DECIMALS) -> Any:
    """GeoJSON coordinates (nested lists of numbers) rounded to `ndigits` decimals."""
    if isinstance(obj, float):
        return round(obj, ndigits)
    if isinstance(obj, (list, tuple)):
        return [round_coords(v, ndigits) for v in obj]
    return obj


def site_location(site: Site) -> dict[str, Any]:
    """Where a site is, for maps and people: AOI centroid [lon, lat], bbox [w, s, e, n] and the AOI itself."""
    poly = site.polygon
    c = poly.centroid
    return {
        "center": [round(c.x, 6), round(c.y, 6)],
        "bbox": [round(v, 6) for v in poly.bounds],
        "aoi": {"type": "Polygon", "coordinates": round_coords([list(map(list, poly.exterior.coords))])},
    }


# ---------------------------------------------------------------------------------------------------------------
# quicklook, map image, published mask

_RAMP = 252  # palette entries 0..251: the NDVI ramp
_NODATA_IDX, _EDGE_IDX = 252, 253
_HATCH_IDX, _OUTSIDE_IDX = 253, 254  # map images: hatch lines over no-data, transparent outside the frame


def _palette(*, map_image: bool = False) -> list[int]:
    import matplotlib

    ramp = (matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, _RAMP))[:, :3] * 255).round().astype(np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:_RAMP] = ramp
    if map_image:
        pal[_NODATA_IDX] = (205, 205, 205)
        pal[_HATCH_IDX] = (90, 90, 90)
    else:
        pal[_NODATA_IDX] = (128, 128, 128)
        pal[_EDGE_IDX] = (220, 0, 0)
    out: list[int] = pal.ravel().tolist()
    return out


def _ndvi_index(ndvi: np.ndarray) -> np.ndarray:
    lo, hi = NDVI_RANGE
    idx: np.ndarray = (
        np.clip((np.nan_to_num(ndvi, nan=lo) - lo) / (hi - lo) * (_RAMP - 1), 0, _RAMP - 1).round().astype(np.uint8)
    )
    idx[~np.isfinite(ndvi)] = _NODATA_IDX
    return idx


def render_quicklook(ndvi: np.ndarray, mask: np.ndarray) -> bytes:
    """NDVI in a fixed colour ramp, the scar boundary in red; at most QUICKLOOK_MAX_PX on a side (palette PNG)."""
    from PIL import Image
    from scipy import ndimage

    step = max(1, math.ceil(max(ndvi.shape) / QUICKLOOK_MAX_PX))
    idx = _ndvi_index(ndvi)
    edge = mask & ~ndimage.binary_erosion(mask)
    edge = ndimage.binary_dilation(edge, iterations=step)  # visible on screen, and after subsampling
    idx[edge] = _EDGE_IDX
    img = Image.fromarray(np.ascontiguousarray(idx[::step, ::step]), mode="P")
    img.putpalette(_palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@dataclass(frozen=True)
class MercatorFrame:
    """Where the site grid's pixels land in a Web Mercator image: `lookup[r, c]` is the flat index of the source
    pixel (nearest neighbour) or -1 outside the grid; `bounds` are the image's [west, south, east, north] in lon/lat
    (a Web Mercator image is placed exactly by its lon/lat corners on a Leaflet/MapLibre map)."""

    lookup: np.ndarray
    bounds: tuple[float, float, float, float]


@lru_cache(maxsize=8)
def mercator_frame(grid: SiteGrid) -> MercatorFrame:
    from pyproj import Transformer
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    w, s, e, n = grid.bounds
    transform, width, height = calculate_default_transform(grid.crs, "EPSG:3857", grid.width, grid.height, w, s, e, n)
    if max(width, height) > MAP_MAX_PX:
        f = max(width, height) / MAP_MAX_PX
        transform, width, height = calculate_default_transform(
            grid.crs, "EPSG:3857", grid.width, grid.height, w, s, e, n, resolution=abs(transform.a) * f
        )
    src = np.arange(grid.width * grid.height, dtype=np.int32).reshape(grid.shape)
    dst = np.full((height, width), -1, np.int32)
    reproject(
        src,
        dst,
        src_transform=grid.transform,
        src_crs=grid.crs,
        dst_transform=transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest,
        src_nodata=-1,
        dst_nodata=-1,
    )
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + transform.a * width, y1 + transform.e * height
    to_ll = Transformer.from_crs(3857, 4326, always_xy=True)
    west, south = to_ll.transform(x0, y0)
    east, north = to_ll.transform(x1, y1)
    return MercatorFrame(dst, (round(west, 8), round(south, 8), round(east, 8), round(north, 8)))


def render_map_image(ndvi: np.ndarray, grid: SiteGrid) -> bytes:
    """The frame's NDVI in the fixed colour ramp, warped to Web Mercator; pixels not observed on this date in light
    grey hatched dark grey (no data, never a colour of the ramp), transparent outside the frame (palette PNG)."""
    from PIL import Image

    mf = mercator_frame(grid)
    flat = _ndvi_index(ndvi).ravel()
    idx = np.where(mf.lookup >= 0, flat[np.clip(mf.lookup, 0, None)], _OUTSIDE_IDX).astype(np.uint8)
    rr, cc = np.indices(idx.shape)
    hatch = (idx == _NODATA_IDX) & ((rr + cc) % 6 == 0)
    idx[hatch] = _HATCH_IDX
    img = Image.fromarray(np.ascontiguousarray(idx), mode="P")
    img.putpalette(_palette(map_image=True))
    alpha = bytes([255] * _OUTSIDE_IDX + [0])
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6, transparency=alpha)
    return buf.getvalue()


def encode_product_mask(
    mask: np.ndarray, ndvi: np.ndarray, aoi: np.ndarray, grid: SiteGrid, tags: Mapping[str, str]
) -> bytes:
    """The published mask COG: 0 not scar, 1 scar, MASK_NODATA where the date saw nothing (NDVI nodata) or outside
    the AOI; nodata set, a colour table and dataset tags, so GIS tools show it without styling."""
    from rasterio.io import MemoryFile

    data = np.where(mask, 1, 0).astype(np.uint8)
    data[~np.isfinite(ndvi) | ~aoi] = MASK_NODATA
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=1,
            dtype="uint8",
            crs=grid.crs,
            transform=grid.transform,
            nodata=MASK_NODATA,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="DEFLATE",
        ) as tmp:
            tmp.write(data, 1)
            tmp.write_colormap(1, MASK_COLORS)
            tmp.update_tags(**tags)
            tmp.update_tags(1, **{f"CLASS_{v['value']}": v["name"] for v in MASK_VALUES})
            tmp.set_band_description(1, "scar mask: 0 not scar, 1 scar, 255 not observed / outside the AOI")
        with mem.open() as src, MemoryFile() as out:
            from rasterio.shutil import copy as rio_copy

            rio_copy(src, out.name, driver="COG", compress="DEFLATE", blocksize=256, overview_resampling="nearest")
            return bytes(out.read())


def _tracker_name(store: Store, site_id: str) -> str:
    try:
        doc = json.loads(store.get(keys.tracker_identity(site_id)))
    except (KeyMissing, ValueError):
        return "unknown"
    if not isinstance(doc, dict):
        return "unknown"
    parts = [str(doc.get(k)) for k in ("tracker", "name", "kind") if doc.get(k)]
    return parts[0] if parts else json.dumps(doc, sort_keys=True)[:120]


# ---------------------------------------------------------------------------------------------------------------
# polygons


def _round(v: Any, ndigits: int) -> Any:
    """Numbers as people read them (no 16-digit floats in the outlines' attributes); anything else unchanged."""
    return round(v, ndigits) if isinstance(v, float) and math.isfinite(v) else v


def _frame_feature_props(site_id: str, frame: FrameEntry, row: Mapping[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    low = bool(row.get("low_confidence"))
    return {
        "site": site_id,
        "date": frame.date,
        "datetime": frame.datetime,
        "scene_id": frame.scene_id,
        "area_m2": _round(row.get("area_m2"), 1),
        "change_pct": _round(row.get("change_pct"), 2),
        "same_season_change_pct": _round(row.get("same_season_change_pct"), 2),
        "clear_fraction": _round(frame.clear_fraction, 4),
        "confidence": "low" if low else "normal",
        "low_confidence_reason": row.get("low_confidence_reason") or "",
        "source_items": ",".join(frame.item_ids),
    }


def _gdf(rows: list[dict[str, Any]], geoms: list[Any], grid: SiteGrid) -> gpd.GeoDataFrame:
    import geopandas as gpd

    return gpd.GeoDataFrame(rows, geometry=[None if g is None or g.is_empty else g for g in geoms], crs=grid.crs)


def _geojson_bytes(gdf: gpd.GeoDataFrame, grid: SiteGrid) -> bytes:
    """RFC 7946 GeoJSON in lon/lat: polygons simplified by half a pixel in the grid CRS (removes the pixel staircase,
    keeps every corner that matters), coordinates rounded to COORD_DECIMALS."""
    out = gdf.copy()
    out["geometry"] = out.geometry.simplify(grid.resolution / 2, preserve_topology=True)
    doc = json.loads(out.to_crs(4326).to_json(drop_id=True, to_wgs84=False))
    for feat in doc.get("features", []):
        geom = feat.get("geometry")
        if geom:
            geom["coordinates"] = round_coords(geom["coordinates"])
        if "bbox" in feat:
            feat["bbox"] = round_coords(feat["bbox"])
    doc.pop("bbox", None)
    return (json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n").encode()


def _parquet_bytes(gdf: gpd.GeoDataFrame) -> bytes:
    """GeoParquet with typed columns: `date` a date, `datetime` a UTC timestamp."""
    import pandas as pd

    out = gdf.copy()
    if len(out):
        out["date"] = pd.to_datetime(out["date"]).dt.date
        out["datetime"] = pd.to_datetime(out["datetime"], utc=True)
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    return buf.getvalue()


def read_polygons(store: Store, site_id: str) -> dict[str, Any]:
    """scene_id -> polygon in the grid CRS, from the published GeoParquet (empty if none yet or unreadable)."""
    import geopandas as gpd

    try:
        data = store.get(keys.products_prefix(site_id) + "polygons.parquet")
        gdf = gpd.read_parquet(io.BytesIO(data))
    except KeyMissing:
        return {}
    except Exception as e:  # noqa: BLE001 - a damaged file is rebuilt, not trusted
        log.warning("site %s: cannot read the published polygons (%s); rebuilding them", site_id, e)
        return {}
    return {str(sid): geom for sid, geom in zip(gdf["scene_id"], gdf.geometry, strict=True)}


# ---------------------------------------------------------------------------------------------------------------
# plots (matplotlib, Agg)


def _season(date: str) -> tuple[str, int]:
    """('summer-autumn', year) for Jun-Nov; ('winter-spring', year of its December) for Dec-May."""
    d = dt.date.fromisoformat(date)
    if 6 <= d.month <= 11:
        return "summer-autumn", d.year
    return "winter-spring", d.year if d.month == 12 else d.year - 1


def _season_start(season: str, year: int) -> dt.date:
    return dt.date(year, 6, 1) if season == "summer-autumn" else dt.date(year, 12, 1)


def _season_label(season: str, year: int) -> str:
    return str(year) if season == "summer-autumn" else f"{year}/{str(year + 1)[-2:]}"


def _fig_png(fig: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _area_unit(rows: list[dict[str, Any]]) -> tuple[float, str]:
    """km² from 0.1 km² up, m² below (so axis ticks read 2,000 / 4,000, not 0.002 / 0.004)."""
    top = max((float(r.get("area_m2") or 0) for r in rows), default=0.0)
    return (1e6, "km²") if top >= 1e5 else (1.0, "m²")


def _thousands(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))


def plot_area_series(title: str, rows: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> bytes:
    """The full area series (m² or km²), low-confidence frames hollow, alert events as vertical lines by level."""
    plt = _plt()
    import matplotlib.dates as mdates

    fig, ax = plt.subplots(figsize=(10, 4.2))
    dates = [dt.date.fromisoformat(r["date"]) for r in rows]
    div, unit = _area_unit(rows)
    area = [(r["area_m2"] or 0) / div for r in rows]
    low = [bool(r.get("low_confidence")) for r in rows]
    ax.plot(dates, area, "-", color="#1f4e79", lw=1.4, zorder=2)
    ok = [k for k, flag in enumerate(low) if not flag]
    bad = [k for k, flag in enumerate(low) if flag]
    ax.plot([dates[k] for k in ok], [area[k] for k in ok], "o", color="#1f4e79", ms=4, zorder=3, label="frame")
    if bad:
        ax.plot(
            [dates[k] for k in bad],
            [area[k] for k in bad],
            "o",
            mfc="white",
            mec="#1f4e79",
            ms=5,
            zorder=3,
            label="low confidence",
        )
    seen: set[str] = set()
    for ev in alerts:
        level = str(ev.get("level", "watch"))
        try:
            d = dt.date.fromisoformat(ev["date"][:10])
        except (ValueError, TypeError):
            continue
        state = str(ev.get("state", ""))
        style = "-" if state == "confirmed" else "--" if state not in FINAL_STATES else ":"
        label = f"alert {level} ({state})"
        ax.axvline(
            d,
            color=LEVEL_COLORS.get(level, "#888888"),
            ls=style,
            lw=1.3,
            zorder=1,
            label=None if label in seen else label,
        )
        seen.add(label)
    ax.set_ylabel(f"scar area ({unit})")
    _thousands(ax)
    ax.set_title(f"{title}: scar area")
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib leaves __init__ unannotated
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]  # as above
    ax.grid(alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no frames yet", transform=ax.transAxes, ha="center", va="center", color="#666")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _fig_png(fig)


def plot_seasonal_panels(title: str, rows: list[dict[str, Any]]) -> bytes:
    """Paper Figs. 8 and 14: area within summer–autumn (Jun–Nov) and winter–spring (Dec–May), one line per year."""
    plt = _plt()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    div, unit = _area_unit(rows)
    groups: dict[tuple[str, int], list[tuple[int, float, bool]]] = {}
    for r in rows:
        s, y = _season(r["date"])
        day = (dt.date.fromisoformat(r["date"]) - _season_start(s, y)).days
        groups.setdefault((s, y), []).append((day, (r["area_m2"] or 0) / div, bool(r.get("low_confidence"))))
    cmap = plt.get_cmap("viridis")
    months_of = {
        "summer-autumn": ("Jun", "Jul", "Aug", "Sep", "Oct", "Nov"),
        "winter-spring": ("Dec", "Jan", "Feb", "Mar", "Apr", "May"),
    }
    for ax, season in ((axes[0], "summer-autumn"), (axes[1], "winter-spring")):
        months = months_of[season]
        years = sorted(y for s, y in groups if s == season)
        for k, y in enumerate(years):
            pts = sorted(groups[(season, y)])
            color = cmap(k / max(1, len(years) - 1) * 0.85)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color, lw=1.4, label=_season_label(season, y))
            ax.plot([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], "o", color=color, ms=4)
            ax.plot([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], "o", mfc="white", mec=color, ms=5)
        start = _season_start(season, 2001)
        ticks = [
            (dt.date(start.year + (start.month + i - 1) // 12, (start.month + i - 1) % 12 + 1, 1) - start).days
            for i in range(7)
        ]
        ax.set_xticks(ticks, [*months, ""])
        ax.set_xlim(0, ticks[-1])
        ax.set_title(f"{season.replace('-', '–')} ({months[0]}–{months[-1]})")
        ax.grid(alpha=0.3)
        if years:
            ax.legend(title="season of", fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, "no frames in this season", transform=ax.transAxes, ha="center", color="#666")
    axes[0].set_ylabel(f"scar area ({unit})")
    _thousands(axes[0])
    fig.suptitle(f"{title}: scar area by season (summer–autumn vs winter–spring)")
    return _fig_png(fig)


def plot_same_season_boundaries(
    title: str, grid: SiteGrid, rows: list[dict[str, Any]], pixel_geoms: dict[str, Any], background: np.ndarray | None
) -> bytes:
    """Paper Figs. 9 and 15: for each season, the boundary of the last confident frame of each year, overlaid."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4), layout="constrained")
    chosen: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:  # the last confident frame of each season-year (fall back to the last frame)
        key = _season(r["date"])
        if key not in chosen or not r.get("low_confidence") or chosen[key].get("low_confidence"):
            chosen[key] = r
    cmap = plt.get_cmap("plasma")
    extent = (0, grid.width, grid.height, 0)
    union = None
    for g in pixel_geoms.values():
        if g is not None and not g.is_empty:
            union = g.envelope if union is None else union.union(g.envelope)
    for ax, season in ((axes[0], "summer-autumn"), (axes[1], "winter-spring")):
        if background is not None:
            ax.imshow(background, cmap="gray", extent=extent, vmin=NDVI_RANGE[0], vmax=NDVI_RANGE[1])
        years = sorted(y for s, y in chosen if s == season)
        handles: list[Any] = []
        for k in reversed(range(len(years))):  # newest first and widest, older ones on top: all stay visible
            r = chosen[(season, years[k])]
            geom = pixel_geoms.get(r["scene_id"])
            color = cmap(k / max(1, len(years) - 1) * 0.8)
            lw = 1.3 + 0.9 * (k == len(years) - 1) + 0.4 * (len(years) - 1 - k > 0)
            if geom is None or geom.is_empty:
                continue
            for poly in getattr(geom, "geoms", [geom]):
                xs, ys = poly.exterior.xy
                ax.plot(xs, ys, color=color, lw=lw)
            handles.insert(0, Line2D([], [], color=color, lw=2, label=f"{r['date']}"))
        if union is not None:
            x0, y0, x1, y1 = union.bounds
            pad = max(20.0, 0.15 * max(x1 - x0, y1 - y0))
            ax.set_xlim(max(0, x0 - pad), min(grid.width, x1 + pad))
            ax.set_ylim(min(grid.height, y1 + pad), max(0, y0 - pad))
        ax.set_title(f"{season.replace('-', '–')} boundaries across years")
        ax.set_xticks([])
        ax.set_yticks([])
        if handles:
            ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.8)
        else:
            ax.text(0.5, 0.5, "no frames in this season", transform=ax.transAxes, ha="center", color="#666")
    fig.suptitle(
        f"{title}: scar boundary in the same season of each year\n(last confident frame of each season; "
        f"background: latest NDVI; {grid.resolution:g} m pixels)"
    )
    return _fig_png(fig)


# ---------------------------------------------------------------------------------------------------------------
# the run


@dataclass
class PublishReport:
    site_id: str
    frames_total: int = 0
    frames_updated: list[str] = field(default_factory=list)
    plots_updated: list[str] = field(default_factory=list)
    stac_items_written: int = 0
    objects_written: int = 0
    index_revision: int = 0
    index_changed: bool = False
    dashboard_key: str = keys.DASHBOARD_PREFIX + "index.html"
    dashboard_url: str = ""
    alert_level: str = "none"

    def summary(self) -> str:
        if not self.index_changed:
            return (
                f"site {self.site_id}: products up to date ({self.frames_total} frames, revision "
                f"{self.index_revision}); dashboard: {self.dashboard_url}"
            )
        return (
            f"site {self.site_id}: published {len(self.frames_updated)} new/changed frame(s) of "
            f"{self.frames_total}, {len(self.plots_updated)} plot(s), {self.stac_items_written} STAC item(s); "
            f"{self.objects_written} object(s) written, products revision {self.index_revision}; "
            f"dashboard: {self.dashboard_url}"
        )


def load_index(store: Store, site_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The published products index and its tag; (None, None) when none exists or it is unreadable."""
    try:
        data, tag = store.get_with_tag(keys.products_index(site_id))
    except KeyMissing:
        return None, None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format') if isinstance(doc, dict) else None!r}")
    except ValueError as e:
        log.warning("site %s: the products index is unreadable (%s); rebuilding all products", site_id, e)
        return None, tag
    return doc, tag


class _Writer:
    """Counts the objects a run writes (the incremental tests check that an unchanged run writes nothing)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.count = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.store.put(key, data, content_type=content_type)
        self.count += 1

    def put_if_changed(self, key: str, data: bytes, content_type: str) -> bool:
        try:
            if self.store.get(key) == data:
                return False
        except KeyMissing:
            pass
        self.put(key, data, content_type)
        return True


def publish_site(
    site: Site, store: Store, *, dashboard: bool = True, stac: bool = True, max_attempts: int = 3
) -> PublishReport:
    """Write (or bring up to date) the products of a site; see the module docstring. Returns what it did."""
    for attempt in range(max_attempts):
        try:
            return _publish(site, store, dashboard=dashboard, stac=stac)
        except Conflict:
            if attempt + 1 == max_attempts:
                raise ProductsError(
                    f"site {site.id}: another publish run kept replacing "
                    f"{store.url(keys.products_index(site.id))}; run again"
                ) from None
            log.info("site %s: another publish run swapped the products index first; redoing", site.id)
    raise AssertionError("unreachable")


def _publish(site: Site, store: Store, *, dashboard: bool, stac: bool) -> PublishReport:
    from shapely.geometry import MultiPolygon

    from scarmon.ingest.frames import decode_ndvi
    from scarmon.tracking.pipeline import read_mask

    sid = site.id
    manifest, _ = load_manifest(store, sid)
    report = PublishReport(sid, frames_total=len(manifest.frames))
    w = _Writer(store)
    old, old_tag = load_index(store, sid)
    old_frames = {f["scene_id"]: f for f in (old or {}).get("frames", [])}
    rows = {r["scene_id"]: r for r in read_series(store, sid)}
    alerts = read_alerts(store, sid)
    level = current_alert_level(store, sid, alerts)
    report.alert_level = level
    grid = SiteGrid.from_dict(manifest.grid) if manifest.grid else None
    tracked = [f for f in manifest.frames if f.scene_id in rows]  # frames the tracker has measured
    if len(tracked) < len(manifest.frames):
        log.info(
            "site %s: %d frame(s) not tracked yet; publishing the %d tracked ones",
            sid,
            len(manifest.frames) - len(tracked),
            len(tracked),
        )
    location = site_location(site)
    tracker = _tracker_name(store, sid)
    aoi_px: np.ndarray | None = None

    old_polys = read_polygons(store, sid) if old_frames else {}
    frames_out: list[dict[str, Any]] = []
    grid_geoms: dict[str, Any] = {}
    pixel_geoms: dict[str, Any] = {}
    latest_ndvi = None
    for frame in tracked:
        if grid is None:  # frames without a grid cannot be: the manifest gets its grid with the first append
            raise ProductsError(f"site {sid}: the sequence has frames but no grid ({store.url(keys.manifest(sid))})")
        mkey = keys.mask(sid, frame)
        try:
            mask_bytes = store.get(mkey)
        except KeyMissing:
            log.warning("site %s: mask %s missing; frame %s not published", sid, mkey, frame.scene_id)
            continue
        row = rows[frame.scene_id]
        mask_tag = _tag(PRODUCTS_VERSION, mask_bytes, frame.objects.get("ndvi"), location["aoi"], tracker)
        props = _frame_feature_props(sid, frame, row)
        row_tag = _tag(PRODUCTS_VERSION, mask_tag, props)
        prev = old_frames.get(frame.scene_id)
        same_mask = prev is not None and prev.get("mask_tag") == mask_tag
        if same_mask and frame.scene_id in old_polys:
            grid_geom = old_polys[frame.scene_id]
            if grid_geom is None:
                grid_geom = MultiPolygon()
            pix_geom = grid_to_pixel(grid_geom, grid)
        else:
            mask = read_mask(store, mkey)
            pix_geom = mask_to_pixel_polygon(mask)
            grid_geom = pixel_to_grid(pix_geom, grid)
        qkey, pkey = keys.quicklook(sid, frame), keys.polygon(sid, frame)
        mapkey, pmkey = keys.map_image(sid, frame), keys.product_mask(sid, frame)
        if not same_mask:
            ndvi = decode_ndvi(store.get(frame.objects["ndvi"]))
            mask = read_mask(store, mkey)
            if aoi_px is None:
                aoi_px = grid.mask(site.polygon)
            w.put(qkey, render_quicklook(ndvi, mask), "image/png")
            w.put(mapkey, render_map_image(ndvi, grid), "image/png")
            tags = {
                "site": sid,
                "site_name": site.display_name,
                "date": frame.date,
                "datetime": frame.datetime,
                "scene_id": frame.scene_id,
                "source_items": ",".join(frame.item_ids),
                "tracker": tracker,
                "values": "0 not scar, 1 scar, 255 not observed or outside the AOI (nodata)",
                "producer": "scarmon",
            }
            w.put(
                pmkey,
                encode_product_mask(mask.astype(bool), ndvi, aoi_px, grid, tags),
                "image/tiff; application=geotiff; profile=cloud-optimized",
            )
        if not (prev is not None and prev.get("row_tag") == row_tag):
            w.put(pkey, _geojson_bytes(_gdf([props], [grid_geom], grid), grid), "application/geo+json")
            report.frames_updated.append(frame.scene_id)
        grid_geoms[frame.scene_id] = grid_geom
        pixel_geoms[frame.scene_id] = pix_geom
        frames_out.append(
            {
                "date": frame.date,
                "datetime": frame.datetime,
                "scene_id": frame.scene_id,
                "item_ids": list(frame.item_ids),
                "area_m2": row.get("area_m2"),
                "change_pct": row.get("change_pct"),
                "same_season_change_pct": row.get("same_season_change_pct"),
                "clear_fraction": frame.clear_fraction,
                "low_confidence": bool(row.get("low_confidence")),
                "low_confidence_reason": row.get("low_confidence_reason") or "",
                "mask": _rel(sid, pmkey),
                "tracker_mask": _rel(sid, mkey),
                "quicklook": _rel(sid, qkey),
                "map_image": _rel(sid, mapkey),
                "polygon": _rel(sid, pkey),
                "ndvi": _rel(sid, frame.objects["ndvi"]) if "ndvi" in frame.objects else None,
                "boundary_px": boundary_rings(pix_geom),
                "mask_tag": mask_tag,
                "row_tag": row_tag,
            }
        )

    files: dict[str, str] = {}
    all_tag: str | None = None
    if frames_out and grid is not None:
        files = {
            "series_csv": "series.csv",
            "series_json": "series.json",
            "polygons_geojson": "products/polygons.geojson",
            "polygons_parquet": "products/polygons.parquet",
        }
        all_tag = _tag([f["row_tag"] for f in frames_out])
        if not old or old.get("polygons_tag") != all_tag:
            props_all = [
                _frame_feature_props(
                    sid, manifest.frames[_frame_pos(manifest.frames, f["scene_id"])], rows[f["scene_id"]]
                )
                for f in frames_out
            ]
            gdf = _gdf(props_all, [grid_geoms[f["scene_id"]] for f in frames_out], grid)
            w.put(keys.products_prefix(sid) + "polygons.parquet", _parquet_bytes(gdf), "application/vnd.apache.parquet")
            w.put(keys.products_prefix(sid) + "polygons.geojson", _geojson_bytes(gdf, grid), "application/geo+json")

    # plots
    title = site.display_name
    plot_rows = [rows[f["scene_id"]] for f in frames_out]
    plot_tags = {
        "area_series": _tag(PRODUCTS_VERSION, title, plot_rows, alerts),
        "seasonal_panels": _tag(PRODUCTS_VERSION, title, plot_rows),
        "same_season_boundaries": _tag(PRODUCTS_VERSION, title, plot_rows, [f["mask_tag"] for f in frames_out]),
    }
    old_plot_tags = (old or {}).get("plot_tags", {})
    for name, tag in plot_tags.items():
        key = keys.products_prefix(sid) + PLOTS[name]
        if old_plot_tags.get(name) == tag and old is not None and name in old.get("plots", {}):
            continue
        if name == "area_series":
            data = plot_area_series(title, plot_rows, alerts)
        elif name == "seasonal_panels":
            data = plot_seasonal_panels(title, plot_rows)
        else:
            if latest_ndvi is None and frames_out:
                latest = manifest.frames[_frame_pos(manifest.frames, frames_out[-1]["scene_id"])]
                latest_ndvi = decode_ndvi(store.get(latest.objects["ndvi"]))
            data = (
                plot_same_season_boundaries(title, grid, plot_rows, pixel_geoms, latest_ndvi)
                if grid
                else plot_area_series(title, [], [])
            )
        w.put(key, data, "image/png")
        report.plots_updated.append(name)
    plots = {name: "products/" + rel for name, rel in PLOTS.items()}

    last_date = frames_out[-1]["date"] if frames_out else None
    index: dict[str, Any] = {
        "format": FORMAT,
        "site_id": sid,
        "name": site.display_name,
        "grid": manifest.grid,
        **location,
        "map": {"crs": "EPSG:3857", "bounds": list(mercator_frame(grid).bounds)} if grid is not None else None,
        "alert_level": level,
        "recent_alert": recent_alert(alerts, last_date),
        "alerts": alerts,
        "last_frame_date": last_date,
        "frames": frames_out,
        "files": files,
        "plots": plots,
        "plot_tags": plot_tags,
        "polygons_tag": all_tag,
        "untracked_frames": len(manifest.frames) - len(tracked),
        "stac": {"collection": "stac/collection.json"} if stac else None,
    }
    if stac and grid is not None:
        from scarmon.products.stac import write_stac

        report.stac_items_written = write_stac(site, store, manifest, index, old, writer=w)
    content_tag = _tag(dict(index.items()))
    if old is not None and old.get("content_tag") == content_tag:
        report.index_revision = int(old.get("revision", 0))
    else:
        index["content_tag"] = content_tag
        index["revision"] = int((old or {}).get("revision", 0)) + 1
        index["published_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        store.put_if(
            keys.products_index(sid),
            (json.dumps(index, allow_nan=False, indent=None, separators=(",", ":")) + "\n").encode(),
            expected_tag=old_tag,
            content_type="application/json",
        )
        w.count += 1
        report.index_revision = index["revision"]
        report.index_changed = True
    if dashboard:
        w.count += publish_dashboard(store)
        w.count += update_sites_index(store, sid, site.display_name, index if report.index_changed else old or index)
    report.objects_written = w.count
    report.dashboard_url = dashboard_url(store, sid)
    return report


def _frame_pos(frames: tuple[FrameEntry, ...], scene_id: str) -> int:
    return next(i for i, f in enumerate(frames) if f.scene_id == scene_id)


# ---------------------------------------------------------------------------------------------------------------
# store-wide: the dashboard files and the list of sites


def dashboard_files() -> dict[str, bytes]:
    base = Path(__file__).resolve().parent / "dashboard"
    return {name: base.joinpath(name).read_bytes() for name in DASHBOARD_FILES}


def dashboard_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The dashboard's settings (`dashboard/config.json`): an optional basemap of raster tiles.

    $SCARMON_BASEMAP_URL      an XYZ tile URL template, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png
                              (unset: no basemap; the map shows the site's own imagery only)
    $SCARMON_BASEMAP_ATTRIBUTION  the credit line the tile provider requires (default for OSM tiles: © OpenStreetMap
                              contributors)
    $SCARMON_BASEMAP_MAX_ZOOM  the provider's highest zoom level (default 19)"""
    env = os.environ if env is None else env
    url = (env.get("SCARMON_BASEMAP_URL") or "").strip()
    if not url:
        return {"format": "scarmon.dashboard/1", "basemap": None}
    if not url.startswith(("https://", "http://")) or "{z}" not in url or "{x}" not in url or "{y}" not in url:
        raise ProductsError(
            f"SCARMON_BASEMAP_URL={url!r} is not an XYZ tile URL: use an http(s) URL with {{z}}, {{x}} "
            "and {y}, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png, or unset it"
        )
    attribution = env.get("SCARMON_BASEMAP_ATTRIBUTION") or (
        "© OpenStreetMap contributors" if "openstreetmap" in url else ""
    )
    try:
        max_zoom = int(env.get("SCARMON_BASEMAP_MAX_ZOOM") or 19)
    except ValueError:
        raise ProductsError(
            "SCARMON_BASEMAP_MAX_ZOOM must be a whole number (the tile provider's highest zoom level, e.g. 19)"
        ) from None
    return {"format": "scarmon.dashboard/1", "basemap": {"url": url, "attribution": attribution, "max_zoom": max_zoom}}


def publish_dashboard(store: Store, env: Mapping[str, str] | None = None) -> int:
    """Copy the static dashboard and its settings into `dashboard/` of the store (only files that differ)."""
    w = _Writer(store)
    for name, data in dashboard_files().items():
        w.put_if_changed(keys.DASHBOARD_PREFIX + name, data, DASHBOARD_FILES[name])
    w.put_if_changed(
        keys.DASHBOARD_CONFIG, (json.dumps(dashboard_config(env), indent=1) + "\n").encode(), "application/json"
    )
    return w.count


def _site_entry(site_id: str, name: str, index: Mapping[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    idx: Mapping[str, Any] = index or {}
    frames = idx.get("frames", [])
    entry: dict[str, Any] = {
        "id": site_id,
        "name": name,
        "index": f"{site_id}/products/index.json",
        "status_doc": keys.status(site_id),
        "alert_level": idx.get("alert_level", "none"),
        "recent_alert": idx.get("recent_alert"),
        "frames": len(frames),
        "center": idx.get("center"),
        "bbox": idx.get("bbox"),
        "first_date": frames[0]["date"] if frames else None,
        "last_date": frames[-1]["date"] if frames else None,
        "last_area_m2": frames[-1]["area_m2"] if frames else None,
        "status": "error" if error else ("ok" if frames else "empty"),
    }
    if error:
        entry["error"] = error
    return entry


def update_sites_index(
    store: Store,
    site_id: str,
    name: str,
    index: Mapping[str, Any] | None,
    *,
    error: str | None = None,
    max_attempts: int = 10,
) -> int:
    """Insert or replace this site's entry in `sites.json` (conditional put, so parallel sites do not clobber)."""
    entry = _site_entry(site_id, name, index, error)
    changed = 0

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal changed
        doc = doc or {"format": "scarmon.sites/1", "sites": []}
        sites = [s for s in doc["sites"] if isinstance(s, dict) and s.get("id") != site_id]
        old = next((s for s in doc["sites"] if isinstance(s, dict) and s.get("id") == site_id), None)
        if error and old is not None:  # a failed publish keeps what the site looked like before
            entry.update({k: old[k] for k in ("center", "bbox") if entry.get(k) is None and k in old})
        changed = int(old != entry)
        return {**doc, "sites": sorted([*sites, entry], key=lambda s: str(s.get("id")))} if changed else None

    update_document(
        store,
        keys.SITES_INDEX,
        change,
        parse=_parse_sites_index,
        dump=lambda d: (json.dumps(d, indent=1) + "\n").encode(),
        what="dashboard site index",
        max_attempts=max_attempts,
    )
    return changed


def _parse_sites_index(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("sites"), list):
        raise ValueError("no 'sites' list")
    return doc


def dashboard_url(store: Store, site_id: str | None = None) -> str:
    """Where the dashboard is: an http URL for S3 stores with an endpoint, else the file (serve its store folder
    over HTTP to open it: browsers do not let a page fetch() from file://)."""
    url = store.url(keys.DASHBOARD_PREFIX + "index.html")
    return url + (f"#site={site_id}" if site_id and url.startswith("http") else "")


PUBLIC_PATTERNS = (
    keys.DASHBOARD_PREFIX + "*",
    keys.SITES_INDEX,
    keys.ROOT_CATALOG,
    keys.products_prefix("*") + "*",
    keys.stac_collection("*").rsplit("/", 1)[0] + "/*",
    keys.series_csv("*"),
    keys.series_json("*"),
    keys.status("*"),
    keys.frames_prefix("*") + "*.tif",
)
"""What browsers may read anonymously: the dashboard, its site list, the STAC catalog, each site's products (masks,
polygons, quicklooks, plots, map images, index), its area series, its status document and the NDVI frames the STAC
items name as their source. Nothing else: not the manifest, the video frames, the tracker's state, corrections, the
alert state, history or outbox, nor the lock."""


def s3_public_read_policy(store: Store) -> str | None:
    """The least-privilege bucket policy that lets browsers read the published products and the dashboard over
    plain HTTP (PUBLIC_PATTERNS, nothing else); None for local stores. Apply with
    `aws s3api put-bucket-policy --bucket B --policy '<this>'`, or serve the bucket through a proxy instead."""
    bucket = getattr(store, "bucket", None)
    if not bucket:
        return None
    prefix = getattr(store, "prefix", "")
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ScarmonProductsPublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": [f"arn:aws:s3:::{bucket}/{prefix}{p}" for p in PUBLIC_PATTERNS],
                }
            ],
        }
    )


def publish_failed(store: Store, site: Site, error: str) -> None:
    """Mark a site whose publish failed in `sites.json` (the dashboard shows it plainly); keeps its old products."""
    index, _ = load_index(store, site.id)
    update_sites_index(store, site.id, site.display_name, index, error=error)


__all__ = [
    "FORMAT",
    "PUBLIC_PATTERNS",
    "ProductsError",
    "PublishReport",
    "current_alert_level",
    "dashboard_config",
    "dashboard_url",
    "load_index",
    "mask_to_pixel_polygon",
    "publish_dashboard",
    "publish_failed",
    "publish_site",
    "read_alerts",
    "recent_alert",
    "s3_public_read_policy",
    "site_location",
    "update_sites_index",
]
