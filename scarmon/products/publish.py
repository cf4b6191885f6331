"""Products of a site for GIS and dashboards, written into the store next to the sequence (DESIGN.md, Outputs).

Layout (keys relative to the store root; `S` is the site id):

- `S/masks/*.tif`                       mask COGs, written by tracking (referenced, not copied)
- `S/series.csv`, `S/series.json`       the area series, written by tracking (referenced)
- `S/products/polygons/{frame}.geojson` the scar polygon of one frame (lon/lat, RFC 7946)
- `S/products/polygons.geojson`         all frames, one feature per frame (lon/lat)
- `S/products/polygons.parquet`         the same as GeoParquet in the site grid's UTM CRS (exact areas)
- `S/products/quicklooks/{frame}.png`   NDVI in colour with the scar boundary in red
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

from scarmon.errors import ScarmonError
import datetime as dt
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scarmon.store import keys
from scarmon.store.documents import update_document
from scarmon.grid import SiteGrid
from scarmon.store.sequence import FrameEntry, load_manifest
from scarmon.site import Site
from scarmon.store.backends import Conflict, KeyMissing, Store
from scarmon.tracking.pipeline import read_series

log = logging.getLogger(__name__)

FORMAT = "scarmon.products/1"
PRODUCTS_VERSION = "6"  # bump to force every product to be rebuilt (a change of drawing code, say)
QUICKLOOK_MAX_PX = 1024
NDVI_RANGE = (-0.2, 0.9)  # fixed colour mapping, the same for every frame (never per-frame min-max)
LEVELS = ("none", "watch", "warning", "alarm")
LEVEL_COLORS = {"watch": "#e6a700", "warning": "#e4572e", "alarm": "#b0003a"}
DASHBOARD_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                   "style.css": "text/css; charset=utf-8"}
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
    return key[len(prefix):]


def _tag(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------------------
# alerts (issue 4 writes them; absence means "no alerts")

def read_alerts(store: Store, site_id: str) -> list[dict]:
    """Alert events from `{site}/alerts.jsonl`, oldest first; malformed lines are skipped with a warning."""
    try:
        data = store.get(keys.alert_history(site_id))
    except KeyMissing:
        return []
    events = []
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


def current_alert_level(store: Store, site_id: str, events: list[dict]) -> str:
    """The site's alert level now: from the stored alert state if there is one, else from the last event."""
    for key in (keys.alert_state(site_id),):
        try:
            state = json.loads(store.get(key))
        except (KeyMissing, ValueError):
            continue
        if not isinstance(state, dict):
            continue
        if str(state.get("status", "")).lower() == "none":
            return "none"
        level = state.get("level_name", state.get("level"))
        if isinstance(level, bool):
            continue
        if isinstance(level, int) and 0 <= level < len(LEVELS):
            return LEVELS[level]
        if isinstance(level, str):
            return level
    if not events:
        return "none"
    last = events[-1]
    if str(last.get("state", "")).lower() in FINAL_STATES:
        return "none"
    return str(last.get("level") or "none")


# ---------------------------------------------------------------------------------------------------------------
# geometry

def mask_to_pixel_polygon(mask: np.ndarray):
    """The mask as a shapely (Multi)Polygon in pixel corner coordinates (x = column, y = row), exact pixel edges."""
    from rasterio.features import shapes
    from shapely.geometry import MultiPolygon, shape

    m = np.ascontiguousarray(mask.astype(np.uint8))
    polys = [shape(geom) for geom, value in shapes(m, mask=m.astype(bool), connectivity=4) if value == 1]
    if not polys:
        return MultiPolygon()
    return MultiPolygon(polys) if len(polys) > 1 else polys[0]


def pixel_to_grid(geom, grid: SiteGrid):
    from shapely import affinity

    r = grid.resolution
    return affinity.affine_transform(geom, [r, 0.0, 0.0, -r, grid.x0, grid.y0])


def boundary_rings(geom, tolerance: float = 0.75) -> list[list[list[float]]]:
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


# ---------------------------------------------------------------------------------------------------------------
# quicklook

_RAMP = 252          # palette entries 0..251: the NDVI ramp
_NODATA_IDX, _EDGE_IDX = 252, 253


def _palette() -> list[int]:
    import matplotlib

    ramp = (matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, _RAMP))[:, :3] * 255).round().astype(np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:_RAMP] = ramp
    pal[_NODATA_IDX] = (128, 128, 128)
    pal[_EDGE_IDX] = (220, 0, 0)
    return pal.ravel().tolist()


def _ndvi_index(ndvi: np.ndarray) -> np.ndarray:
    lo, hi = NDVI_RANGE
    idx = np.clip((np.nan_to_num(ndvi, nan=lo) - lo) / (hi - lo) * (_RAMP - 1), 0, _RAMP - 1).round().astype(np.uint8)
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


# ---------------------------------------------------------------------------------------------------------------
# polygons

def _frame_feature_props(site_id: str, frame: FrameEntry, row: dict | None) -> dict:
    row = row or {}
    low = bool(row.get("low_confidence"))
    return {
        "site": site_id, "date": frame.date, "datetime": frame.datetime, "scene_id": frame.scene_id,
        "area_m2": row.get("area_m2"), "change_pct": row.get("change_pct"),
        "same_season_change_pct": row.get("same_season_change_pct"),
        "clear_fraction": frame.clear_fraction, "confidence": "low" if low else "normal",
        "low_confidence_reason": row.get("low_confidence_reason") or "",
        "source_items": ",".join(frame.item_ids),
    }


def _gdf(rows: list[dict], geoms: list, grid: SiteGrid):
    import geopandas as gpd

    return gpd.GeoDataFrame(rows, geometry=[None if g is None or g.is_empty else g for g in geoms], crs=grid.crs)


def _geojson_bytes(gdf) -> bytes:
    doc = json.loads(gdf.to_crs(4326).to_json(drop_id=True, to_wgs84=False))
    return (json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n").encode()


def _parquet_bytes(gdf) -> bytes:
    buf = io.BytesIO()
    gdf.to_parquet(buf, index=False)
    return buf.getvalue()


def read_polygons(store: Store, site_id: str) -> dict[str, Any]:
    """scene_id -> polygon in the grid CRS, from the published GeoParquet (empty if none yet or unreadable)."""
    import geopandas as gpd

    try:
        data = store.get(keys.products_prefix(site_id) + "polygons.parquet")
        gdf = gpd.read_parquet(io.BytesIO(data))
    except KeyMissing:
        return {}
    except Exception as e:  # a damaged file is rebuilt, not trusted
        log.warning("site %s: cannot read the published polygons (%s); rebuilding them", site_id, e)
        return {}
    return {sid: geom for sid, geom in zip(gdf["scene_id"], gdf.geometry)}


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


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_area_series(title: str, rows: list[dict], alerts: list[dict]) -> bytes:
    """The full area series (km²), low-confidence frames hollow, alert events as vertical lines by level."""
    plt = _plt()
    import matplotlib.dates as mdates

    fig, ax = plt.subplots(figsize=(10, 4.2))
    dates = [dt.date.fromisoformat(r["date"]) for r in rows]
    area = [(r["area_m2"] or 0) / 1e6 for r in rows]
    low = [bool(r.get("low_confidence")) for r in rows]
    ax.plot(dates, area, "-", color="#1f4e79", lw=1.4, zorder=2)
    ax.plot([d for d, l in zip(dates, low) if not l], [a for a, l in zip(area, low) if not l], "o", color="#1f4e79",
            ms=4, zorder=3, label="frame")
    if any(low):
        ax.plot([d for d, l in zip(dates, low) if l], [a for a, l in zip(area, low) if l], "o", mfc="white",
                mec="#1f4e79", ms=5, zorder=3, label="low confidence")
    seen = set()
    for ev in alerts:
        level = str(ev.get("level", "watch"))
        try:
            d = dt.date.fromisoformat(ev["date"][:10])
        except (ValueError, TypeError):
            continue
        state = str(ev.get("state", ""))
        style = "-" if state == "confirmed" else "--" if state not in FINAL_STATES else ":"
        label = f"alert {level} ({state})"
        ax.axvline(d, color=LEVEL_COLORS.get(level, "#888888"), ls=style, lw=1.3, zorder=1,
                   label=None if label in seen else label)
        seen.add(label)
    ax.set_ylabel("scar area (km²)")
    ax.set_title(f"{title}: scar area")
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.grid(alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no frames yet", transform=ax.transAxes, ha="center", va="center", color="#666")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _fig_png(fig)


def plot_seasonal_panels(title: str, rows: list[dict]) -> bytes:
    """Paper Figs. 8 and 14: area within summer–autumn (Jun–Nov) and winter–spring (Dec–May), one line per year."""
    plt = _plt()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    groups: dict[tuple[str, int], list[tuple[int, float, bool]]] = {}
    for r in rows:
        s, y = _season(r["date"])
        day = (dt.date.fromisoformat(r["date"]) - _season_start(s, y)).days
        groups.setdefault((s, y), []).append((day, (r["area_m2"] or 0) / 1e6, bool(r.get("low_confidence"))))
    cmap = plt.get_cmap("viridis")
    for ax, season, months in ((axes[0], "summer-autumn", "JJASON"), (axes[1], "winter-spring", "DJFMAM")):
        years = sorted(y for s, y in groups if s == season)
        for k, y in enumerate(years):
            pts = sorted(groups[(season, y)])
            color = cmap(k / max(1, len(years) - 1) * 0.85)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color, lw=1.4, label=_season_label(season, y))
            ax.plot([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], "o", color=color, ms=4)
            ax.plot([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], "o", mfc="white", mec=color, ms=5)
        start = _season_start(season, 2001)
        ticks = [(dt.date(start.year + (start.month + i - 1) // 12, (start.month + i - 1) % 12 + 1, 1) - start).days
                 for i in range(7)]
        ax.set_xticks(ticks, [*months, ""])
        ax.set_xlim(0, ticks[-1])
        ax.set_title(f"{season.replace('-', '–')} ({months[0]}–{months[-1]})")
        ax.grid(alpha=0.3)
        if years:
            ax.legend(title="season of", fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, "no frames in this season", transform=ax.transAxes, ha="center", color="#666")
    axes[0].set_ylabel("scar area (km²)")
    fig.suptitle(f"{title}: scar area by season (summer–autumn vs winter–spring)")
    return _fig_png(fig)


def plot_same_season_boundaries(title: str, grid: SiteGrid, rows: list[dict], pixel_geoms: dict[str, Any],
                                background: np.ndarray | None) -> bytes:
    """Paper Figs. 9 and 15: for each season, the boundary of the last confident frame of each year, overlaid."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4), layout="constrained")
    chosen: dict[tuple[str, int], dict] = {}
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
        handles = []
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
    fig.suptitle(f"{title}: scar boundary in the same season of each year\n(last confident frame of each season; "
                 f"background: latest NDVI; {grid.resolution:g} m pixels)")
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
            return (f"site {self.site_id}: products up to date ({self.frames_total} frames, revision "
                    f"{self.index_revision}); dashboard: {self.dashboard_url}")
        return (f"site {self.site_id}: published {len(self.frames_updated)} new/changed frame(s) of "
                f"{self.frames_total}, {len(self.plots_updated)} plot(s), {self.stac_items_written} STAC item(s); "
                f"{self.objects_written} object(s) written, products revision {self.index_revision}; "
                f"dashboard: {self.dashboard_url}")


def load_index(store: Store, site_id: str) -> tuple[dict | None, str | None]:
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


def publish_site(site: Site, store: Store, *, dashboard: bool = True, stac: bool = True,
                 max_attempts: int = 3) -> PublishReport:
    """Write (or bring up to date) the products of a site; see the module docstring. Returns what it did."""
    for attempt in range(max_attempts):
        try:
            return _publish(site, store, dashboard=dashboard, stac=stac)
        except Conflict:
            if attempt + 1 == max_attempts:
                raise ProductsError(f"site {site.id}: another publish run kept replacing "
                                    f"{store.url(keys.products_index(site.id))}; run again") from None
            log.info("site %s: another publish run swapped the products index first; redoing", site.id)
    raise AssertionError("unreachable")


def _publish(site: Site, store: Store, *, dashboard: bool, stac: bool) -> PublishReport:
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
        log.info("site %s: %d frame(s) not tracked yet; publishing the %d tracked ones", sid,
                 len(manifest.frames) - len(tracked), len(tracked))

    old_polys = read_polygons(store, sid) if old_frames else {}
    frames_out: list[dict] = []
    grid_geoms: dict[str, Any] = {}
    pixel_geoms: dict[str, Any] = {}
    latest_ndvi = None
    for frame in tracked:
        mkey = keys.mask(sid, frame)
        try:
            mask_bytes = store.get(mkey)
        except KeyMissing:
            log.warning("site %s: mask %s missing; frame %s not published", sid, mkey, frame.scene_id)
            continue
        row = rows[frame.scene_id]
        mask_tag = _tag(PRODUCTS_VERSION, mask_bytes, frame.objects.get("ndvi"))
        props = _frame_feature_props(sid, frame, row)
        row_tag = _tag(PRODUCTS_VERSION, mask_tag, props)
        prev = old_frames.get(frame.scene_id)
        reuse_geom = prev is not None and prev.get("mask_tag") == mask_tag and frame.scene_id in old_polys
        if reuse_geom:
            grid_geom = old_polys[frame.scene_id]
            if grid_geom is None:
                from shapely.geometry import MultiPolygon
                grid_geom = MultiPolygon()
            r = grid.resolution
            from shapely import affinity
            pix_geom = affinity.affine_transform(grid_geom, [1 / r, 0.0, 0.0, -1 / r, -grid.x0 / r, grid.y0 / r])
        else:
            mask = read_mask(store, mkey)
            pix_geom = mask_to_pixel_polygon(mask)
            grid_geom = pixel_to_grid(pix_geom, grid)
        qkey, pkey = keys.quicklook(sid, frame), keys.polygon(sid, frame)
        if not (prev is not None and prev.get("mask_tag") == mask_tag):
            ndvi = decode_ndvi(store.get(frame.objects["ndvi"]))
            w.put(qkey, render_quicklook(ndvi, read_mask(store, mkey)), "image/png")
        if not (prev is not None and prev.get("row_tag") == row_tag):
            w.put(pkey, _geojson_bytes(_gdf([props], [grid_geom], grid)), "application/geo+json")
            report.frames_updated.append(frame.scene_id)
        grid_geoms[frame.scene_id] = grid_geom
        pixel_geoms[frame.scene_id] = pix_geom
        frames_out.append({
            "date": frame.date, "datetime": frame.datetime, "scene_id": frame.scene_id,
            "item_ids": list(frame.item_ids), "area_m2": row.get("area_m2"), "change_pct": row.get("change_pct"),
            "same_season_change_pct": row.get("same_season_change_pct"), "clear_fraction": frame.clear_fraction,
            "low_confidence": bool(row.get("low_confidence")),
            "low_confidence_reason": row.get("low_confidence_reason") or "",
            "mask": _rel(sid, mkey), "quicklook": _rel(sid, qkey), "polygon": _rel(sid, pkey),
            "ndvi": _rel(sid, frame.objects["ndvi"]) if "ndvi" in frame.objects else None,
            "boundary_px": boundary_rings(pix_geom), "mask_tag": mask_tag, "row_tag": row_tag,
        })

    files: dict[str, str] = {}
    if frames_out:
        files = {"series_csv": "series.csv", "series_json": "series.json",
                 "polygons_geojson": "products/polygons.geojson", "polygons_parquet": "products/polygons.parquet"}
        all_tag = _tag([f["row_tag"] for f in frames_out])
        if not old or old.get("polygons_tag") != all_tag:
            props = [_frame_feature_props(sid, manifest.frame(f["scene_id"]), rows[f["scene_id"]]) for f in frames_out]
            gdf = _gdf(props, [grid_geoms[f["scene_id"]] for f in frames_out], grid)
            w.put(keys.products_prefix(sid) + "polygons.parquet", _parquet_bytes(gdf), "application/vnd.apache.parquet")
            w.put(keys.products_prefix(sid) + "polygons.geojson", _geojson_bytes(gdf), "application/geo+json")
    else:
        all_tag = None

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
                latest = manifest.frame(frames_out[-1]["scene_id"])
                latest_ndvi = decode_ndvi(store.get(latest.objects["ndvi"]))
            data = plot_same_season_boundaries(title, grid, plot_rows, pixel_geoms, latest_ndvi) if grid else \
                plot_area_series(title, [], [])
        w.put(key, data, "image/png")
        report.plots_updated.append(name)
    plots = {name: "products/" + rel for name, rel in PLOTS.items()}

    index = {
        "format": FORMAT, "site_id": sid, "name": site.display_name,
        "grid": manifest.grid, "alert_level": level, "alerts": alerts,
        "frames": frames_out, "files": files, "plots": plots, "plot_tags": plot_tags, "polygons_tag": all_tag,
        "untracked_frames": len(manifest.frames) - len(tracked),
        "stac": {"collection": "stac/collection.json"} if stac else None,
    }
    if stac and grid is not None:
        from scarmon.products.stac import write_stac

        report.stac_items_written = write_stac(site, store, manifest, index, old, writer=w)
    content_tag = _tag({k: v for k, v in index.items()})
    if old is not None and old.get("content_tag") == content_tag:
        report.index_revision = int(old.get("revision", 0))
    else:
        index["content_tag"] = content_tag
        index["revision"] = int((old or {}).get("revision", 0)) + 1
        index["published_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        store.put_if(keys.products_index(sid), (json.dumps(index, allow_nan=False, indent=None, separators=(",", ":"))
                                      + "\n").encode(), expected_tag=old_tag, content_type="application/json")
        w.count += 1
        report.index_revision = index["revision"]
        report.index_changed = True
    if dashboard:
        w.count += publish_dashboard(store)
        w.count += update_sites_index(store, sid, site.display_name, index if report.index_changed else old or index)
    report.objects_written = w.count
    report.dashboard_url = dashboard_url(store, sid)
    return report


# ---------------------------------------------------------------------------------------------------------------
# store-wide: the dashboard files and the list of sites

def dashboard_files() -> dict[str, bytes]:
    base = Path(__file__).resolve().parent / "dashboard"
    return {name: base.joinpath(name).read_bytes() for name in DASHBOARD_FILES}


def publish_dashboard(store: Store) -> int:
    """Copy the static dashboard into `dashboard/` of the store (only files that differ); returns how many."""
    w = _Writer(store)
    for name, data in dashboard_files().items():
        w.put_if_changed(keys.DASHBOARD_PREFIX + name, data, DASHBOARD_FILES[name])
    return w.count


def _site_entry(site_id: str, name: str, index: dict | None, error: str | None = None) -> dict:
    frames = (index or {}).get("frames", [])
    entry = {"id": site_id, "name": name, "index": f"{site_id}/products/index.json",
             "alert_level": (index or {}).get("alert_level", "none"), "frames": len(frames),
             "first_date": frames[0]["date"] if frames else None, "last_date": frames[-1]["date"] if frames else None,
             "last_area_m2": frames[-1]["area_m2"] if frames else None,
             "status": "error" if error else ("ok" if frames else "empty")}
    if error:
        entry["error"] = error
    return entry


def update_sites_index(store: Store, site_id: str, name: str, index: dict | None, *, error: str | None = None,
                       max_attempts: int = 10) -> int:
    """Insert or replace this site's entry in `sites.json` (conditional put, so parallel sites do not clobber)."""
    entry = _site_entry(site_id, name, index, error)
    changed = 0

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal changed
        doc = doc or {"format": "scarmon.sites/1", "sites": []}
        sites = [s for s in doc["sites"] if isinstance(s, dict) and s.get("id") != site_id]
        old = next((s for s in doc["sites"] if isinstance(s, dict) and s.get("id") == site_id), None)
        changed = int(old != entry)
        return {**doc, "sites": sorted([*sites, entry], key=lambda s: str(s.get("id")))} if changed else None

    update_document(store, keys.SITES_INDEX, change, parse=_parse_sites_index,
                    dump=lambda d: (json.dumps(d, indent=1) + "\n").encode(), what="dashboard site index",
                    max_attempts=max_attempts)
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


def s3_public_read_policy(store: Store) -> str | None:
    """The bucket policy that lets browsers read the store's objects over plain HTTP (the dashboard needs it on S3);
    None for local stores. Apply with `aws s3api put-bucket-policy --bucket B --policy '<this>'`, or serve the
    bucket through a CDN / reverse proxy that signs requests instead."""
    bucket = getattr(store, "bucket", None)
    if not bucket:
        return None
    prefix = getattr(store, "prefix", "")
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ScarmonDashboardRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"}]})


def publish_failed(store: Store, site: Site, error: str) -> None:
    """Mark a site whose publish failed in `sites.json` (the dashboard shows it plainly); keeps its old products."""
    index, _ = load_index(store, site.id)
    update_sites_index(store, site.id, site.display_name, index, error=error)


__all__ = [
    "FORMAT", "ProductsError", "PublishReport", "current_alert_level", "dashboard_url", "load_index",
    "mask_to_pixel_polygon", "publish_dashboard", "publish_failed", "publish_site", "read_alerts",
    "s3_public_read_policy", "update_sites_index",
]
