"""Synthetic Sentinel-2 L2A catalogs with real COG pixels, for the offline demo, the tests and the benchmarks.

Why synthetic: the real archive cannot be reached offline, and only a world we define knows the true scar outline
at every date. The world is one continuous scene in the site's UTM CRS (a scar polygon that evolves with time,
seasonal vegetation, outcrops, a river, terrain shadow, clouds and their shadows, cirrus, snow); every acquisition
is rendered into two overlapping tiles in two different UTM zones, with the traps of real Planetary Computer data:
no `raster:bands`, the +1000 DN offset keyed on `s2:processing_baseline` (including reprocessed old scenes),
tile-wide `eo:cloud_cover`, missing tiles at orbit edges, and SCL that sometimes misses a cloud shadow. Opt-in per
scenario (cloud-edges, snow-fringe, bare-rim): SCL that misses thin cloud edges, coherent cloud parts and the
partial-snow fringe below the snow line, a seasonally bare rim around the scar, and deciduous forest. Opt-in per
catalog (`covering_share`): on a share of the passes one tile covers the whole AOI and the other only part of it, as
where MGRS tiles overlap (~10 km) around a site; by default each tile's data edge cuts through the AOI.

Per-acquisition randomness is seeded by (seed, scenario, date), so a short date range renders exactly the same
scenes as the same dates inside a long one. A `truth.json` next to `items.json` records what was drawn.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import geometry_mask
from scipy import ndimage
from shapely.geometry import LineString, Polygon, box, mapping, shape

from scarmon.grid import SiteGrid, utm_epsg
from scarmon.site import Site, parse_site

EPOCH = date(2021, 6, 1)
"""Acquisition phase anchor: acquisitions fall on EPOCH + k * revisit_days, whatever start/end are asked for."""
OFFSET_FROM = date(2022, 1, 25)
"""Processing baseline 04.00 (+1000 DN) from this acquisition date on."""
BASELINE_0509_FROM = date(2022, 12, 6)
OLD_BASELINE, NEW_BASELINES, REPROCESSED_BASELINE = "02.12", ("04.00", "05.09"), "05.00"
OFFSET_DN = 1000
DN_SCALE = 1e-4
TILE_MARGIN_M = 750.0
"""Each tile raster is the AOI bounds (in the tile's CRS) plus this on every side: AOI + 1.5 km, kept small on disk."""
FOOTPRINT_CUT = 0.22
"""Each tile's data footprint stops this share of the AOI width short of the far AOI edge: alone it covers ~78 %."""
SWATH_SLANT_DEG = 12.0
"""The data edge is tilted like a descending-orbit swath edge, so coverage is not a function of longitude only."""
COVERING_CUT = -0.22
"""The data edge of a tile that covers the whole AOI (`covering_share`): this share of the AOI width beyond its near
edge, outside the AOI but still inside the raster margin (the tile keeps a strip of no data)."""
RELATIVE_ORBIT = 33
NOISE = 0.005
SUPERSAMPLE = 2
COG_PROFILE = {"driver": "COG", "blocksize": 256, "compress": "deflate", "level": 1, "nodata": 0, "overviews": "NONE"}
"""Overviews are left out: the rasters are ~350 px (one overview level), readers take full resolution, and they
would add ~20 % to disk size and ~40 % to write time. Deflate level 1: noisy DN compress no better at level 6.
Writing dominates the run time and holds the GIL (threads do not help; processes would need fork or a __main__
guard in every caller), so generation is a plain loop: ~40 ms per item."""
SCL_CLOUDS = (8, 9, 10)
SCL_PERCENTAGES = {  # PC property -> SCL classes, as % of the tile's valid (SCL != 0) pixels
    "s2:saturated_defective_pixel_percentage": (1,),
    "s2:dark_features_percentage": (2,),
    "s2:cloud_shadow_percentage": (3,),
    "s2:vegetation_percentage": (4,),
    "s2:not_vegetated_percentage": (5,),
    "s2:water_percentage": (6,),
    "s2:unclassified_percentage": (7,),
    "s2:medium_proba_clouds_percentage": (8,),
    "s2:high_proba_clouds_percentage": (9,),
    "s2:thin_cirrus_percentage": (10,),
    "s2:snow_ice_percentage": (11,),
}
BAND_INFO = {
    "B04": (
        "Band 4 - Red - 10m",
        {
            "name": "B04",
            "common_name": "red",
            "description": "Band 4 - Red",
            "center_wavelength": 0.665,
            "full_width_half_max": 0.038,
        },
    ),
    "B08": (
        "Band 8 - NIR - 10m",
        {
            "name": "B08",
            "common_name": "nir",
            "description": "Band 8 - NIR",
            "center_wavelength": 0.842,
            "full_width_half_max": 0.145,
        },
    ),
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


# --- Scenarios ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Pure data describing one synthetic landslide world. Lengths in metres, offsets from the AOI centre (E, N)."""

    name: str
    description: str
    growth: tuple[tuple[str, float], ...]
    """(ISO date, scar area factor) keyframes, linear in between, constant outside; 1.0 = initial area."""
    head_m: tuple[float, float]
    """Head scarp (upslope end) of the initial scar; it retreats only slowly upslope as the scar grows."""
    downslope_deg: float
    """Azimuth the scar extends towards (0 = north, 90 = east)."""
    length_m: float
    """Initial length along the downslope axis (and width across it) of the elliptical lobe."""
    width_m: float
    events: tuple[tuple[str, str], ...] = ()
    """(ISO date, label) of the triggers/failures, for reports and benchmarks."""
    lobes: tuple[tuple[int, float, float], ...] = ((3, 0.07, 0.4), (5, 0.04, 1.9), (7, 0.02, 4.1))
    """Outline irregularity of the initial lobe: (harmonic, relative amplitude, phase)."""
    veg_summer: tuple[float, float] = (0.04, 0.30)
    """Vegetation (red, nir) at peak green, ~August (NDVI ~0.76)."""
    veg_winter: tuple[float, float] = (0.08, 0.18)
    """Dormant vegetation (red, nir) (NDVI ~0.38)."""
    veg_texture: float = 0.10
    """Relative spatial variation of vegetation reflectance (patchy grass, shrubs)."""
    scar_regrowth: float = 1.0
    """1.0: sparse regrowth lifts scar NDVI from ~0.07 (dormant season) to ~0.13 at peak green."""
    outcrops: tuple[tuple[float, float, float, float, float, float], ...] = ()
    """Bare rock blobs: (x, y, semi-axis a, semi-axis b, angle_deg, NDVI)."""
    river: tuple[tuple[float, float], ...] = ()
    """River centreline vertices; empty = no river."""
    river_width_m: float = 70.0
    """River water: red ~0.05, nir ~0.02 (NDVI ~ -0.4)."""
    terrain_shadow: tuple[float, float, float, float, float] = (600.0, -550.0, 260.0, 90.0, 30.0)
    """Steep slope in permanent terrain shadow: ellipse (x, y, a, b, angle_deg); SCL 2, darker, not cloud."""
    vegetation_prompts_m: tuple[tuple[float, float], ...] = ((550.0, 650.0),)
    """Negative prompts of demo sites, on stable vegetation away from scar, outcrops and shadows."""
    p_cloudy: float = 0.40
    """Chance that clouds cover 50-100 % of the AOI (+-0.15 with the season: wetter in summer)."""
    p_partly: float = 0.18
    """Chance of 4-12 % cloud over the AOI; with the offset shadows, 10-30 % of it is not clear."""
    p_speckle: float = 0.14
    """Chance of 1-5 % cloud (small clouds and their shadows). The rest of the acquisitions are clear."""
    p_cirrus: float = 0.12
    """Chance of thin cirrus (SCL 10 where it is thick enough, a faint unflagged brightening elsewhere)."""
    p_snow: float = 0.35
    """Chance of snow (10-70 % of the AOI, upslope first) on a December-March acquisition."""
    p_missed_shadow: float = 0.03
    """Chance that SCL misses the cloud shadows of an acquisition (darkened pixels labelled as the ground)."""
    p_orbit_edge: float = 0.06
    """Chance that one of the two tiles of an acquisition is not delivered (coverage ~0.78)."""
    shadow_offset_m: tuple[float, float] = (-290.0, 345.0)
    """Where a cloud's shadow falls relative to the cloud (fixed sun in the south-east)."""
    cloud_flag_min: float = 0.0
    """SCL flags cloud only where its opacity reaches this; 0 flags any cloud (conservative). Above 0 the thin edges
    of every cloud are left with the class of the ground below, as real SCL often does."""
    p_missed_cloud_part: float = 0.0
    """Chance, on a date with clouds, of one more small cumulus (radius 100-250 m, opaque core) near the scar that SCL
    misses entirely and labels as the ground below."""
    snow_flag_min: float = 0.0
    """SCL flags snow only where the 10 m cover exceeds this; 0 flags any snow. Above 0 the partial-snow fringe below
    the snow line (cover ramps 0 -> 1 over ~150 m) is labelled vegetation or bare soil, and its NDVI is depressed."""
    rim_m: float = 0.0
    """Width of a seasonally bare rim around the scar (half bare ground, annual herbs): NDVI ~0.48 at peak green,
    ~0.10 when dormant. Not scar: it greens up every summer."""
    deciduous: tuple[tuple[float, float, float, float, float], ...] = ()
    """Deciduous forest blobs (x, y, semi-axis a, semi-axis b, angle_deg): NDVI ~0.83 in summer, leaves fall to
    ~0.13 when dormant (stems, litter, steep shaded ground). Not scar."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "creep-failure",
            "Baige-like: the scar creeps +50 % in area over a year, then fails twice three weeks apart "
            "(2022-07-09 and 2022-07-30, x2.5 in all), then stays stable.",
            growth=(
                ("2021-06-01", 1.0),
                ("2022-06-15", 1.5),
                ("2022-07-08", 1.5),
                ("2022-07-09", 2.4),
                ("2022-07-29", 2.4),
                ("2022-07-30", 3.75),
            ),
            events=(("2022-07-09", "failure 1"), ("2022-07-30", "failure 2")),
            head_m=(150.0, 420.0),
            downslope_deg=250.0,
            length_m=330.0,
            width_m=230.0,
        ),
        Scenario(
            "active-creep",
            "Sela-like: a small scar grows +300 % within six weeks of a flood on 2022-07-19, then contracts "
            "slightly as its margins revegetate.",
            growth=(
                ("2021-06-01", 1.0),
                ("2022-07-18", 1.0),
                ("2022-07-19", 1.6),
                ("2022-08-01", 2.6),
                ("2022-08-15", 3.5),
                ("2022-08-30", 4.0),
                ("2023-05-31", 3.6),
            ),
            events=(("2022-07-19", "flood trigger"),),
            head_m=(0.0, 250.0),
            downslope_deg=200.0,
            length_m=160.0,
            width_m=110.0,
        ),
        Scenario(
            "stable-seasonal",
            "Control: a constant scar under strong vegetation seasonality and many cloud shadows; any area trend is "
            "a false alarm.",
            growth=(("2021-06-01", 1.0),),
            head_m=(-100.0, 300.0),
            downslope_deg=180.0,
            length_m=400.0,
            width_m=220.0,
            veg_summer=(0.035, 0.33),
            veg_winter=(0.10, 0.16),
            veg_texture=0.15,
            p_cloudy=0.30,
            p_partly=0.30,
            p_speckle=0.25,
            p_missed_shadow=0.06,
        ),
        Scenario(
            "outcrops-river",
            "A scar growing x2 over two years beside stable bare-rock outcrops (NDVI 0.05-0.10, not connected to the "
            "scar) and a river (NDVI < 0) crossing the AOI.",
            growth=(("2021-06-01", 1.0), ("2022-06-01", 1.3), ("2022-09-01", 1.8), ("2023-06-01", 2.0)),
            head_m=(-350.0, 350.0),
            downslope_deg=135.0,
            length_m=260.0,
            width_m=170.0,
            outcrops=(
                (-560.0, 60.0, 70.0, 45.0, 20.0, 0.05),
                (-250.0, -450.0, 60.0, 40.0, -30.0, 0.08),
                (650.0, 500.0, 90.0, 60.0, 60.0, 0.10),
                (-700.0, -700.0, 50.0, 35.0, 0.0, 0.07),
            ),
            river=tuple((330.0 + 60.0 * math.sin(y / 280.0), y) for y in np.arange(-2600.0, 2601.0, 100.0)),
            vegetation_prompts_m=((-650.0, 650.0),),
        ),
        # The scenarios below switch on what SCL misses and what is seasonally bare; the four above keep their scenes.
        Scenario(
            "cloud-edges",
            "A scar creeping +40 % in a year, then failing (x1.5 on 2022-08-11), under frequent partly cloudy skies whose "
            "thin edges SCL does not flag and of which it sometimes misses a whole part.",
            growth=(("2021-06-01", 1.0), ("2022-05-01", 1.4), ("2022-08-10", 1.4), ("2022-08-11", 2.1)),
            events=(("2022-08-11", "failure"),),
            head_m=(200.0, 250.0),
            downslope_deg=160.0,
            length_m=300.0,
            width_m=200.0,
            p_cloudy=0.30,
            p_partly=0.35,
            p_speckle=0.2,
            cloud_flag_min=0.35,
            p_missed_cloud_part=0.5,
            vegetation_prompts_m=((-650.0, -650.0),),
        ),
        Scenario(
            "snow-fringe",
            "A stable scar on a slope that the winter snow line crosses; SCL flags only the snow cover above 60 %, so a "
            "~90 m fringe of partial snow below the snow line reads as low-NDVI ground.",
            growth=(("2021-06-01", 1.0), ("2022-06-01", 1.0), ("2022-07-01", 1.3)),
            events=(("2022-06-15", "spring reactivation"),),
            head_m=(-150.0, 820.0),
            downslope_deg=180.0,
            length_m=400.0,
            width_m=220.0,
            p_snow=0.8,
            snow_flag_min=0.6,
            vegetation_prompts_m=((650.0, -650.0),),
        ),
        Scenario(
            "bare-rim",
            "A stable clearing ringed by a 30 m seasonally bare rim (half bare ground, annual herbs) and next to deciduous "
            "forest that drops its leaves: neither is scar, both are as low as the scar in winter.",
            growth=(("2021-06-01", 1.0),),
            head_m=(-50.0, 250.0),
            downslope_deg=200.0,
            length_m=380.0,
            width_m=240.0,
            rim_m=30.0,
            deciduous=((230.0, 30.0, 200.0, 140.0, 70.0), (-330.0, -10.0, 150.0, 120.0, 20.0)),
            vegetation_prompts_m=((600.0, -650.0),),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; a KeyError lists the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


# --- The true scar ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The site's UTM CRS and the AOI centre in it: the origin all scenario offsets are measured from."""

    epsg: int
    cx: float
    cy: float

    def to_site(self) -> Transformer:
        return Transformer.from_crs(4326, self.epsg, always_xy=True)


def _geom_transform(fn: Any, geom: Any) -> Any:
    """Apply a pyproj-style fn(x, y) -> (x, y) to a shapely geometry (shapely.ops.transform is deprecated)."""
    return shapely.transform(geom, lambda x, y: fn(x, y), interleaved=False)


def _as_site(site: Site | dict[str, Any]) -> Site:
    return site if isinstance(site, Site) else parse_site(site)


def _as_date(d: str | date | datetime) -> date:
    if isinstance(d, datetime):
        return d.date()
    return d if isinstance(d, date) else date.fromisoformat(str(d)[:10])


def _frame(site: Site | Polygon) -> _Frame:
    """Same CRS choice as grid.site_grid (UTM zone of the AOI centroid), so truth and site grid agree."""
    c = (site.polygon if isinstance(site, Site) else site).centroid
    epsg = utm_epsg(c.x, c.y)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(c.x, c.y)
    return _Frame(epsg, float(x), float(y))


def growth_factor(scenario: str | Scenario, when: str | date) -> float:
    """Scar area relative to its initial area at `when` (piecewise linear between the scenario's keyframes)."""
    scn = get_scenario(scenario) if isinstance(scenario, str) else scenario
    days = [date.fromisoformat(d).toordinal() for d, _ in scn.growth]
    return float(np.interp(_as_date(when).toordinal(), days, [g for _, g in scn.growth]))


SCAR_VERTICES = 720


def _scar_radii(scn: Scenario, g: float) -> tuple[np.ndarray, np.ndarray]:
    """(psi, r): the scar outline in polar form about the centre of the initial lobe, psi measured from the
    downslope direction. Growth multiplies each radius by exp(lam * w(psi)), w largest downslope and small at the
    head: the scar lengthens downslope, every radius is monotonic in lam, so a growing scar always contains its
    earlier outlines (and a shrinking one stays inside them). lam is solved so that the area is exactly g * A0."""
    psi = np.linspace(0.0, 2 * math.pi, SCAR_VERTICES, endpoint=False)
    a, b = scn.length_m / 2, scn.width_m / 2
    r0 = a * b / np.hypot(b * np.cos(psi), a * np.sin(psi))
    r0 *= 1.0 + sum(amp * np.cos(k * psi + ph) for k, amp, ph in scn.lobes)
    w = 0.15 + 0.85 * ((1 + np.cos(psi)) / 2) ** 1.5
    area0 = _polar_area(r0)
    lo, hi = -4.0, 4.0
    for _ in range(60):  # bisection: area(lam) is increasing
        lam = (lo + hi) / 2
        lo, hi = (lam, hi) if _polar_area(r0 * np.exp(lam * w)) < g * area0 else (lo, lam)
    return psi, r0 * np.exp((lo + hi) / 2 * w)


def _polar_area(r: np.ndarray) -> float:
    """Area of the polygon with radii r at equal angle steps (shoelace in polar form)."""
    return float(0.5 * math.sin(2 * math.pi / r.size) * np.sum(r * np.roll(r, -1)))


def _scar_axes(scn: Scenario, fr: _Frame) -> tuple[float, float, float, float, float, float]:
    """(centre x, centre y, downslope unit vector, across-slope unit vector) in the site CRS."""
    az = math.radians(scn.downslope_deg)
    d, n = (math.sin(az), math.cos(az)), (math.cos(az), -math.sin(az))
    a = scn.length_m / 2
    return fr.cx + scn.head_m[0] + a * d[0], fr.cy + scn.head_m[1] + a * d[1], *d, *n


def _scar(scn: Scenario, fr: _Frame, g: float) -> Polygon:
    """The scar outline at area factor g (1 = initial), in the site CRS."""
    psi, r = _scar_radii(scn, g)
    px, py, dx, dy, nx, ny = _scar_axes(scn, fr)
    u, v = r * np.cos(psi), r * np.sin(psi)
    return Polygon(np.column_stack([px + u * dx + v * nx, py + u * dy + v * ny]))


def _scar_point(scn: Scenario, fr: _Frame, g: float, along: float) -> tuple[float, float]:
    """A point on the scar axis, `along` times the radius towards the toe (> 0) or the head (< 0); inside for
    |along| < 1."""
    psi, r = _scar_radii(scn, g)
    radius = r[0] if along >= 0 else r[SCAR_VERTICES // 2]
    px, py, dx, dy, _, _ = _scar_axes(scn, fr)
    return px + along * radius * dx, py + along * radius * dy


def scar_polygon(site: Site | dict[str, Any], when: str | date, *, scenario: str) -> Polygon:
    """The true scar at `when`, in the site's UTM CRS (metres)."""
    scn = get_scenario(scenario)
    return _scar(scn, _frame(_as_site(site)), growth_factor(scn, when))


def scar_area_m2(site: Site | dict[str, Any], when: str | date, *, scenario: str) -> float:
    """Exact area of the true scar polygon at `when` (in the site's UTM CRS, like SiteGrid pixel areas)."""
    return float(scar_polygon(site, when, scenario=scenario).area)


def truth_mask(site: Site | dict[str, Any], grid: SiteGrid, when: str | date, *, scenario: str) -> np.ndarray:
    """Boolean scar mask on any grid: pixels whose centre lies in the true scar at `when`."""
    site = _as_site(site)
    poly = scar_polygon(site, when, scenario=scenario)
    fr = _frame(site)
    if grid.epsg != fr.epsg:
        poly = _geom_transform(Transformer.from_crs(fr.epsg, grid.epsg, always_xy=True).transform, poly)
    return np.asarray(geometry_mask([poly], out_shape=grid.shape, transform=grid.transform, invert=True))


# --- Demo sites ----------------------------------------------------------------------------------------------------

DEMO_CENTRE = (96.004, 31.1)
"""Just east of the UTM 46/47 boundary (96 E), Jinsha-River-like: the site grid is in EPSG:32647 and every
acquisition comes as one tile per zone."""
DEMO_HALF_SIZE_M = 1000.0


def acquisition_dates(start: str | date, end: str | date, revisit_days: int = 5) -> list[date]:
    """Acquisition dates in [start, end] (inclusive), on the fixed EPOCH + k * revisit_days phase."""
    s, e = _as_date(start), _as_date(end)
    k0 = -((EPOCH - s).days // revisit_days)  # ceil((s - EPOCH) / revisit)
    out, k = [], k0
    while (d := EPOCH + timedelta(days=k * revisit_days)) <= e:
        out.append(d)
        k += 1
    return out


def demo_site(scenario: str = "creep-failure", *, site_id: str | None = None) -> dict[str, Any]:
    """A valid site mapping (YAML-ready) for `scenario`: a 2 x 2 km AOI straddling the UTM 46/47 boundary, positive
    prompts inside the initial scar and negative ones on vegetation (plus outcrop and river where there are)."""
    scn = get_scenario(scenario)
    lon, lat = DEMO_CENTRE
    epsg = utm_epsg(lon, lat)
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    h = DEMO_HALF_SIZE_M
    ring = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h), (cx - h, cy - h)]
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    aoi = {"type": "Polygon", "coordinates": [[[round(v, 6) for v in to_ll.transform(x, y)] for x, y in ring]]}
    start = EPOCH
    first = acquisition_dates(start, start + timedelta(days=30))[0]
    fr = _frame(shape(aoi))
    points = [(p, 1) for p in _positive_points(scn, fr, first)] + [(p, 0) for p in _negative_points(scn, fr)]
    prompts = []
    for (x, y), label in points:
        plon, plat = to_ll.transform(x, y)
        prompts.append({"lon": round(plon, 6), "lat": round(plat, 6), "label": label, "date": first.isoformat()})
    return {
        "id": site_id or f"demo-{scenario}",
        "name": f"Synthetic {scenario} ({scn.description.split(':')[0]})",
        "aoi": aoi,
        "prompts": prompts,
        "resolution_m": 2,
        "start": start.isoformat(),
    }


def _positive_points(scn: Scenario, fr: _Frame, when: date) -> list[tuple[float, float]]:
    g = growth_factor(scn, when)
    return [_scar_point(scn, fr, g, 0.0), _scar_point(scn, fr, g, -0.5)]


def _negative_points(scn: Scenario, fr: _Frame) -> list[tuple[float, float]]:
    pts = [(fr.cx + x, fr.cy + y) for x, y in scn.vegetation_prompts_m]
    if scn.outcrops:
        pts.append((fr.cx + scn.outcrops[0][0], fr.cy + scn.outcrops[0][1]))
    if scn.river:
        line = LineString([(fr.cx + x, fr.cy + y) for x, y in scn.river])
        p = line.interpolate(line.project(shapely.Point(fr.cx + 400.0, fr.cy - 600.0)))
        pts.append((p.x, p.y))
    return pts


# --- The static world ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raster:
    """A north-up grid in the site CRS on which smooth random fields live; sampled bilinearly at pixel centres."""

    x0: float
    y0: float
    res: float
    height: int
    width: int

    @classmethod
    def around(cls, bounds: tuple[float, float, float, float], pad: float, res: float) -> _Raster:
        w, s, e, n = bounds
        return cls(w - pad, n + pad, res, math.ceil((n - s + 2 * pad) / res), math.ceil((e - w + 2 * pad) / res))

    def sampler(self, x: np.ndarray, y: np.ndarray) -> _Bilinear:
        """Bilinear sampling of fields on this raster at fixed site-CRS points."""
        return _Bilinear((self.y0 - y) / self.res - 0.5, (x - self.x0) / self.res - 0.5, (self.height, self.width))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.res
        ys = self.y0 - (np.arange(self.height) + 0.5) * self.res
        return np.meshgrid(xs, ys)


class _Bilinear:
    """Bilinear interpolation at fixed points with precomputed neighbours and weights: the same points are
    sampled for every acquisition, and four gathers are ~3x faster than scipy's map_coordinates. Edges clamp."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
        h, w = shape
        r, c = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
        r0, c0 = np.minimum(r.astype(np.int64), h - 2), np.minimum(c.astype(np.int64), w - 2)
        self.i = (r0 * w + c0).astype(np.intp)
        self.fr, self.fc, self.w = (r - r0).astype(np.float32), (c - c0).astype(np.float32), w

    def __call__(self, field: np.ndarray) -> np.ndarray:
        f, i, w = field.ravel(), self.i, self.w
        top = f[i] + self.fc * (f[i + 1] - f[i])
        bottom = f[i + w] + self.fc * (f[i + w + 1] - f[i + w])
        return np.asarray((top + self.fr * (bottom - top)).astype(np.float32, copy=False))


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scales: tuple[tuple[float, float], ...]
) -> np.ndarray:
    """Zero-mean unit-std random field: a weighted sum of Gaussian-filtered white noise at several scales (pixels)."""
    out = np.zeros(shape, np.float32)
    for sigma, weight in scales:
        f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
        out += weight * f / (f.std() + 1e-12)
    return np.asarray((out - out.mean()) / (out.std() + 1e-12))


def _blob(x: float, y: float, a: float, b: float, angle_deg: float, phase: float) -> Polygon:
    """A slightly irregular ellipse (outcrops, terrain shadow)."""
    th = np.linspace(0.0, 2 * math.pi, 180, endpoint=False)
    r = 1 + 0.12 * np.cos(3 * th + phase) + 0.06 * np.cos(5 * th + 2 * phase)
    u, v = a * r * np.cos(th), b * r * np.sin(th)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return Polygon(np.column_stack([x + u * c - v * s, y + u * s + v * c]))


class _World:
    """Everything about the ground that does not change between acquisitions, in the site's UTM CRS."""

    def __init__(self, site: Site, scn: Scenario, seed: int) -> None:
        self.site, self.scn, self.seed = site, scn, seed
        self.fr = _frame(site)
        self.aoi = _geom_transform(self.fr.to_site().transform, site.polygon)
        self.key = zlib.crc32(scn.name.encode())
        self._random_fields(np.random.default_rng([seed, self.key, 1]))
        self._features()
        self.scar_extent = self._scar_extent()

    def _random_fields(self, rng: np.random.Generator) -> None:
        """Static textures and elevation on a 10 m raster; the 40 m raster that clouds are drawn on; AOI masks
        on both (cloud and snow fractions are set over the AOI)."""
        self.tex = _Raster.around(self.aoi.bounds, 2 * TILE_MARGIN_M + 500, 10.0)
        shape = (self.tex.height, self.tex.width)
        self.fields = {
            k: _smooth_field(rng, shape, sc)
            for k, sc in (
                ("veg", ((1.0, 1.0), (6.0, 1.0))),
                ("veg2", ((1.0, 1.0), (4.0, 0.5))),
                ("bare", ((0.7, 1.0), (3.0, 0.6))),
                ("elev", ((25.0, 1.0), (8.0, 0.4))),
            )
        }
        self.fields["elev"] = self._elevation()
        self.tex_aoi = shapely.contains_xy(self.aoi, *self.tex.centres())
        self.wx = _Raster.around(self.aoi.bounds, 2 * TILE_MARGIN_M + 1000, 40.0)
        self.wx_aoi = shapely.contains_xy(self.aoi, *self.wx.centres())

    def _features(self) -> None:
        """Outcrops, river and terrain-shadow polygons in the site CRS."""
        cx, cy, scn = self.fr.cx, self.fr.cy, self.scn
        self.outcrops = [
            (_blob(cx + x, cy + y, a, b, ang, i), ndvi) for i, (x, y, a, b, ang, ndvi) in enumerate(scn.outcrops)
        ]
        self.river = (
            LineString([(cx + x, cy + y) for x, y in scn.river]).buffer(scn.river_width_m / 2) if scn.river else None
        )
        x, y, a, b, ang = scn.terrain_shadow
        self.terrain_shadow = _blob(cx + x, cy + y, a, b, ang, 0.7)
        self.deciduous = (
            shapely.union_all(
                [_blob(cx + x, cy + y, a, b, ang, 1.3 + i) for i, (x, y, a, b, ang) in enumerate(scn.deciduous)]
            )
            if scn.deciduous
            else None
        )

    def unflagged(self, wx: _Weather) -> tuple[float, float]:
        """(cloud, partial snow) shares of the AOI that SCL leaves unflagged on a date (on the weather and texture
        rasters: approximate at their 40 m and 10 m)."""
        cloud = 0.0
        if wx.alpha is not None:
            missed = (wx.alpha > 0) & (wx.alpha < self.scn.cloud_flag_min)
            if wx.missed_part is not None:
                missed |= (wx.alpha > 0) & (wx.missed_part > 0.5)
            cloud = float(missed[self.wx_aoi].mean())
        snow = 0.0
        if wx.snow_fraction > 0 and self.scn.snow_flag_min > 0:
            cover = np.clip((self.fields["elev"] - _snow_threshold(self, wx.snow_fraction)) / 0.15, 0, 1)
            snow = float(((cover > 0) & (cover <= self.scn.snow_flag_min))[self.tex_aoi].mean())
        return cloud, snow

    def _elevation(self) -> np.ndarray:
        """Elevation proxy (unitless): rising upslope (against the scar's downslope azimuth), plus relief."""
        tx, ty = self.tex.centres()
        az = math.radians(self.scn.downslope_deg)
        ramp = -((tx - self.fr.cx) * math.sin(az) + (ty - self.fr.cy) * math.cos(az)) / 1000.0
        return (ramp + 0.35 * self.fields["elev"]).astype(np.float32)

    def _scar_extent(self) -> Polygon:
        """Bounds of the scar over all keyframes: the only place scar fractions must be recomputed per date."""
        polys = [_scar(self.scn, self.fr, g) for _, g in self.scn.growth]
        return box(*shapely.union_all(polys).bounds).buffer(30.0 + self.scn.rim_m, join_style="mitre")

    def scar(self, when: date) -> Polygon:
        return _scar(self.scn, self.fr, growth_factor(self.scn, when))


# --- Tiles ---------------------------------------------------------------------------------------------------------

MGRS_BANDS = "CDEFGHJKLMNPQRSTUVWX"
MGRS_COLS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
MGRS_ROWS = "ABCDEFGHJKLMNPQRSTUV"


def mgrs_tile(lon: float, lat: float, zone: int) -> str:
    """MGRS 100 km square id (e.g. "47RKQ") of a point, computed in a given UTM zone (S2 tiles overlap zones)."""
    epsg = (32600 if lat >= 0 else 32700) + zone
    e, n = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    band = MGRS_BANDS[min(max(int((lat + 80) // 8), 0), 19)]
    zset = zone % 6 or 6
    col = MGRS_COLS[(zset - 1) % 3][min(max(int(e // 100000) - 1, 0), 7)]
    row = MGRS_ROWS[(int(n // 100000) + (5 if zset % 2 == 0 else 0)) % 20]
    return f"{zone}{band}{col}{row}"


class _Tile:
    """One MGRS tile's raster (10 m B04/B08, 20 m SCL) and everything about it that is fixed for all dates."""

    def __init__(self, world: _World, zone: int, east: bool, cut: float = FOOTPRINT_CUT) -> None:
        site, fr = world.site, world.fr
        c = site.polygon.centroid
        self.epsg = (32600 if c.y >= 0 else 32700) + zone
        self.mgrs = mgrs_tile(c.x, c.y, zone)
        self.east = east
        self._layout(site.polygon)
        to_site = _Reproject(self.epsg, fr.epsg)
        to_ll = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        self.cut = self._cut_line(site.polygon, cut)
        x10, y10 = self._centres(10.0, 1)
        self.valid10 = self._in_footprint(*to_ll.transform(x10, y10))
        self.valid20 = self._in_footprint(*to_ll.transform(*self._centres(20.0, 1)))
        self.footprint = self._footprint_lonlat(to_ll)
        sx, sy = to_site.transform(x10, y10)
        self._sample_static(world, sx, sy)
        self._static_fractions(world, to_site)
        self._scar_window(world, to_site)

    def _layout(self, aoi_ll: Polygon) -> None:
        """Raster grid: the AOI bounds in this tile's CRS plus TILE_MARGIN_M, snapped out to 20 m like S2 tiles."""
        to_tile = Transformer.from_crs(4326, self.epsg, always_xy=True)
        aoi = _geom_transform(to_tile.transform, aoi_ll.segmentize(1e-3))
        w, s, e, n = aoi.bounds
        w, s = math.floor((w - TILE_MARGIN_M) / 20) * 20, math.floor((s - TILE_MARGIN_M) / 20) * 20
        e, n = math.ceil((e + TILE_MARGIN_M) / 20) * 20, math.ceil((n + TILE_MARGIN_M) / 20) * 20
        self.x0, self.y0 = float(w), float(n)
        self.width, self.height = int(e - w) // 10, int(n - s) // 10
        self.transform = Affine(10.0, 0.0, self.x0, 0.0, -10.0, self.y0)
        self.transform20 = Affine(20.0, 0.0, self.x0, 0.0, -20.0, self.y0)
        self.bbox = (float(w), float(s), float(e), float(n))

    def _centres(self, res: float, sub: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile-CRS coordinates of pixel centres at `res`, or of sub x sub sub-pixel centres."""
        h, w = round(self.height * 10 / res), round(self.width * 10 / res)
        step = res / sub
        xs = self.x0 + (np.arange(w * sub) + 0.5) * step
        ys = self.y0 - (np.arange(h * sub) + 0.5) * step
        return np.meshgrid(xs, ys)

    def _cut_line(self, aoi_ll: Polygon, cut: float) -> tuple[float, float, float]:
        """(lon0, lat0, dlon/dlat) of the data edge: a slanted line `cut` of the AOI width inside the AOI edge far from
        the tile (FOOTPRINT_CUT: through the AOI), or outside it where `cut` < 0 (COVERING_CUT: the tile covers it)."""
        w, s, e, n = aoi_ll.bounds
        lon0 = w + cut * (e - w) if self.east else e - cut * (e - w)
        lat0 = (s + n) / 2
        return lon0, lat0, math.tan(math.radians(SWATH_SLANT_DEG)) / math.cos(math.radians(lat0))

    def _in_footprint(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        lon0, lat0, k = self.cut
        edge = lon0 + k * (lat - lat0)
        return lon >= edge if self.east else lon <= edge

    def _footprint_lonlat(self, to_ll: Transformer) -> Polygon:
        """Item geometry: the raster bounds in lon/lat, clipped at the data edge."""
        raster = _geom_transform(to_ll.transform, box(*self.bbox).segmentize(500.0))
        lon0, lat0, k = self.cut
        lo, hi = lat0 - 5, lat0 + 5
        far = lon0 + 10 if self.east else lon0 - 10
        half = Polygon([(lon0 + k * (lo - lat0), lo), (lon0 + k * (hi - lat0), hi), (far, hi), (far, lo)])
        return shapely.set_precision(raster.intersection(half), 1e-7).normalize().reverse()

    def _sample_static(self, world: _World, sx: np.ndarray, sy: np.ndarray) -> None:
        """Textures and weather-grid indices at the 10 m pixel centres (site-CRS coordinates sx, sy)."""
        at = world.tex.sampler(sx, sy)
        samp = {k: at(f) for k, f in world.fields.items()}
        t = world.scn.veg_texture
        self.veg_red = np.exp(t * samp["veg"]).astype(np.float32)
        self.veg_nir = np.exp(t * (-0.5 * samp["veg"] + 0.6 * samp["veg2"])).astype(np.float32)
        self.bare_tex = np.exp(0.06 * samp["bare"]).astype(np.float32)
        self.elev = samp["elev"]
        ox, oy = world.scn.shadow_offset_m
        self.at_wx = world.wx.sampler(sx, sy)
        self.at_shadow = world.wx.sampler(sx - ox, sy - oy)

    def _static_fractions(self, world: _World, to_site: _Reproject) -> None:
        """Outcrop, river and terrain-shadow pixel fractions from 2 x 2 sub-pixel centres (mixed edge pixels)."""
        sx, sy = to_site.transform(*self._centres(10.0, SUPERSAMPLE))
        self.f_out = np.zeros((self.height, self.width), np.float32)
        self.out_red, self.out_nir = self.f_out.copy(), self.f_out.copy()
        for poly, ndvi in world.outcrops:
            f = _fraction(poly, sx, sy)
            red = 0.15 * self.bare_tex
            self.f_out += f
            self.out_red += f * red
            self.out_nir += f * red * (1 + ndvi) / (1 - ndvi)
        self.f_water = _fraction(world.river, sx, sy) if world.river is not None else np.zeros_like(self.f_out)
        self.f_tshadow = _fraction(world.terrain_shadow, sx, sy)
        self.f_dec = _fraction(world.deciduous, sx, sy) if world.deciduous is not None else None
        self.water20 = _block(self.f_water, "mean") >= 0.5
        self.tshadow20 = _block(self.f_tshadow, "mean") >= 0.5

    def _scar_window(self, world: _World, to_site: _Reproject) -> None:
        """The pixel window that can ever hold scar, and its sub-pixel site coordinates."""
        to_tile = Transformer.from_crs(world.fr.epsg, self.epsg, always_xy=True)
        ext = _geom_transform(to_tile.transform, world.scar_extent.segmentize(50.0))
        w, s, e, n = ext.bounds
        c0, c1 = max(int((w - self.x0) // 10), 0), min(int((e - self.x0) // 10) + 1, self.width)
        r0, r1 = max(int((self.y0 - n) // 10), 0), min(int((self.y0 - s) // 10) + 1, self.height)
        self.win = (slice(r0, max(r1, r0)), slice(c0, max(c1, c0)))
        xs = self.x0 + (np.arange(c0 * SUPERSAMPLE, c1 * SUPERSAMPLE) + 0.5) * 10 / SUPERSAMPLE
        ys = self.y0 - (np.arange(r0 * SUPERSAMPLE, r1 * SUPERSAMPLE) + 0.5) * 10 / SUPERSAMPLE
        self.win_xy = to_site.transform(*np.meshgrid(xs, ys))

    def scar_fraction(self, scar: Polygon) -> np.ndarray:
        f = np.zeros((self.height, self.width), np.float32)
        if self.win[0].stop > self.win[0].start and self.win[1].stop > self.win[1].start:
            f[self.win] = _fraction(scar, *self.win_xy)
        return f


class _Reproject:
    """Tile CRS -> site CRS for coordinate arrays; the identity (no pyproj pass) for the tile in the site's zone."""

    def __init__(self, src: int, dst: int) -> None:
        self._t = None if src == dst else Transformer.from_crs(src, dst, always_xy=True)

    def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x, y) if self._t is None else self._t.transform(x, y)


def _fraction(poly: Polygon, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Share of each pixel's sub-pixel centres inside `poly` (inputs are SUPERSAMPLE x finer than the output)."""
    h, w = sx.shape[0] // SUPERSAMPLE, sx.shape[1] // SUPERSAMPLE
    inside = np.zeros(sx.shape, bool)
    x0, y0, x1, y1 = poly.bounds
    near = (sx >= x0) & (sx <= x1) & (sy >= y0) & (sy <= y1)
    if near.any():
        shapely.prepare(poly)
        inside[near] = shapely.contains_xy(poly, sx[near], sy[near])
    return np.asarray(inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32))


def _tiles(world: _World, cut: float = FOOTPRINT_CUT) -> list[_Tile]:
    """Tile "A" in the site's own UTM zone and tile "B" in the neighbouring zone nearer to the AOI, each covering
    the part of the AOI on its own side of the boundary and overlapping in the middle (or, with COVERING_CUT, each
    covering the whole AOI)."""
    c = world.site.polygon.centroid
    zone = world.fr.epsg % 100
    west_edge = -180 + (zone - 1) * 6
    neighbour_west = (c.x - west_edge) < 3
    other = max(zone - 1, 1) if neighbour_west else min(zone + 1, 60)
    return [_Tile(world, zone, east=neighbour_west, cut=cut), _Tile(world, other, east=not neighbour_west, cut=cut)]


def covering_tile(k: int, share: float) -> int | None:
    """Index of the tile whose footprint covers the whole AOI on acquisition k (EPOCH + k * revisit), or None.

    Evenly spread, not drawn: acquisition k covers when floor((k + 1) * share) > floor(k * share), so any run of n
    acquisitions has n * share of them, give or take one; the covering tile alternates between the two (both the
    first and the second item of the pass in id order)."""
    if share <= 0 or math.floor((k + 1) * share) == math.floor(k * share):
        return None
    return math.floor(k * share) % 2


def _block(a: np.ndarray, how: str) -> np.ndarray:
    """10 m -> 20 m by 2 x 2 blocks (strided slices: much faster than a reshaped reduction)."""
    q = a[0::2, 0::2], a[1::2, 0::2], a[0::2, 1::2], a[1::2, 1::2]
    if how == "max":
        return np.asarray(np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3])))
    return np.asarray((q[0] + q[1] + q[2] + q[3]) * np.float32(0.25))


# --- Weather -------------------------------------------------------------------------------------------------------


@dataclass
class _Weather:
    """What the sky (and the ground cover) did on one date, plus the catalog accidents of that date."""

    state: str  # clear | speckle | partly | cloudy
    cloud_fraction: float  # target share of the AOI under cloud
    alpha: np.ndarray | None  # cloud opacity on the weather raster
    cirrus: np.ndarray | None  # thin cirrus opacity on the weather raster
    snow_fraction: float  # share of the AOI under snow
    missed_shadow: bool  # SCL labels this date's cloud shadows as the ground below
    missing_tile: int | None  # index of the tile not delivered (orbit edge)
    missed_part: np.ndarray | None = None  # where SCL misses the cloud on the weather raster (1 = missed)


def _phenology(d: date) -> float:
    """Green-up 0 (dormant, Dec-Mar) .. 1 (peak, mid-August), northern hemisphere."""
    doy = d.timetuple().tm_yday
    return float(((1 + math.cos(2 * math.pi * (doy - 225) / 365.25)) / 2) ** 2)


def _rngs(world: _World, d: date) -> list[np.random.Generator]:
    """Independent streams per date: weather scalars, cloud field, cirrus field, noise of tile 0, noise of tile 1."""
    ss = np.random.SeedSequence([world.seed, world.key, d.toordinal()])
    return [np.random.default_rng(s) for s in ss.spawn(5)]


def _draw_weather(world: _World, d: date, rngs: list[np.random.Generator], clear: bool) -> _Weather:
    """Seasonal cloudiness (wetter in summer), cirrus, winter snow, missed shadows, orbit-edge acquisitions.
    `clear` forces a clear, complete acquisition (the prompt dates)."""
    scn, r = world.scn, rngs[0]
    u = r.random(8)
    doy = d.timetuple().tm_yday
    p_cloudy = min(max(scn.p_cloudy + 0.15 * math.cos(2 * math.pi * (doy - 200) / 365.25), 0.0), 0.9)
    if u[0] < p_cloudy:
        state, frac = "cloudy", 0.5 + 0.5 * u[1]
    elif u[0] < p_cloudy + scn.p_partly:
        state, frac = "partly", 0.04 + 0.08 * u[1]
    elif u[0] < p_cloudy + scn.p_partly + scn.p_speckle:
        state, frac = "speckle", 0.01 + 0.04 * u[1]
    else:
        state, frac = "clear", 0.0
    missed = bool(u[2] < scn.p_missed_shadow)
    if missed and state != "cloudy":
        state, frac = "partly", 0.04 + 0.08 * u[1]
    cirrus = bool(u[3] < scn.p_cirrus)
    snow = 0.1 + 0.6 * u[5] if d.month in (12, 1, 2, 3) and u[4] < scn.p_snow else 0.0
    missing = int(u[7] < 0.5) if u[6] < scn.p_orbit_edge else None
    if clear:
        return _Weather("clear", 0.0, None, None, 0.0, False, None)
    alpha = _opacity(world, rngs[1], frac, ((6.0, 1.0), (1.5, 0.35)), 0.6) if frac > 0 else None
    ci = _opacity(world, rngs[2], 0.1 + 0.4 * u[1], ((10.0, 1.0),), 1.5) * 0.6 if cirrus else None
    part = None
    if alpha is not None and scn.p_missed_cloud_part > 0:  # drawn last, from the weather stream: nothing else moves
        if r.random() < scn.p_missed_cloud_part:
            alpha, part = _missed_part(world, alpha, r)
    return _Weather(state, frac, alpha, ci, snow, missed, missing, part)


def _missed_part(world: _World, alpha: np.ndarray, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small cumulus (radius 100-250 m, opaque core, soft edge) within 300 m of the scar's centre, added to the
    date's clouds; SCL misses all of it. Returns (the new opacity field, the missed part as 0/1)."""
    u = r.random(3)
    sx, sy = world.scar_extent.centroid.coords[0]
    px, py = sx + 600.0 * (u[0] - 0.5), sy + 600.0 * (u[1] - 0.5)
    radius = 100.0 + 150.0 * u[2]
    xs, ys = world.wx.centres()
    d = np.hypot(xs - px, ys - py) / radius
    bump = np.clip(2.0 * (1.0 - d), 0, 1).astype(np.float32)  # opaque within half the radius, fading to the rim
    return np.maximum(alpha, bump), (bump > 0).astype(np.float32)


def _opacity(
    world: _World, rng: np.random.Generator, aoi_fraction: float, scales: tuple[tuple[float, float], ...], soft: float
) -> np.ndarray:
    """A 0..1 opacity field on the weather raster that is > 0 on exactly `aoi_fraction` of the AOI, with soft edges."""
    f = _smooth_field(rng, (world.wx.height, world.wx.width), scales)
    thr = np.quantile(f[world.wx_aoi], 1 - aoi_fraction) if aoi_fraction < 1 else f[world.wx_aoi].min() - 0.05
    return np.asarray(np.clip((f - thr) / soft, 0, 1).astype(np.float32))


def _snow_threshold(world: _World, fraction: float) -> float:
    """Snow line (on the elevation proxy) that puts `fraction` of the AOI under snow."""
    return float(np.quantile(world.fields["elev"][world.tex_aoi], 1 - fraction))


# --- Rendering -----------------------------------------------------------------------------------------------------

DECIDUOUS_SUMMER, DECIDUOUS_WINTER = (0.03, 0.32), (0.10, 0.13)
"""Deciduous canopy (red, nir): NDVI ~0.83 in full leaf, ~0.13 with the leaves down."""
RIM_HERBS = (0.05, 0.6)
"""Green share of the bare rim when dormant and at peak green (NDVI ~0.10 and ~0.48)."""


def _surface(
    world: _World, tile: _Tile, d: date, f_scar: np.ndarray, f_rim: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free surface reflectance (red, nir): vegetation, scar, outcrops, water, terrain shadow."""
    scn, p = world.scn, _phenology(d)
    (sr, sn), (wr, wn) = scn.veg_summer, scn.veg_winter
    base_r: float | np.ndarray = wr + (sr - wr) * p
    base_n: float | np.ndarray = wn + (sn - wn) * p
    if tile.f_dec is not None:  # deciduous forest: denser canopy in summer, leaves fallen when dormant
        (dsr, dsn), (dwr, dwn) = DECIDUOUS_SUMMER, DECIDUOUS_WINTER
        base_r = base_r * (1 - tile.f_dec) + (dwr + (dsr - dwr) * p) * tile.f_dec
        base_n = base_n * (1 - tile.f_dec) + (dwn + (dsn - dwn) * p) * tile.f_dec
    veg_r, veg_n = base_r * tile.veg_red, base_n * tile.veg_nir
    regrow = p * scn.scar_regrowth
    scar_r, scar_n = (0.165 - 0.004 * regrow) * tile.bare_tex, (0.19 + 0.018 * regrow) * tile.bare_tex
    f_veg = np.clip(1 - f_scar - tile.f_out - tile.f_water - (0 if f_rim is None else f_rim), 0, 1)
    red = f_veg * veg_r + f_scar * scar_r + tile.out_red + tile.f_water * 0.05
    nir = f_veg * veg_n + f_scar * scar_n + tile.out_nir + tile.f_water * 0.02
    if f_rim is not None:
        herbs = RIM_HERBS[0] + (RIM_HERBS[1] - RIM_HERBS[0]) * p  # the rim's green share: annual herbs on bare ground
        red = red + f_rim * ((1 - herbs) * 0.165 * tile.bare_tex + herbs * scn.veg_summer[0] * tile.veg_red)
        nir = nir + f_rim * ((1 - herbs) * 0.19 * tile.bare_tex + herbs * 0.30 * tile.veg_nir)
    dark = 1 - (0.5 + 0.1 * (1 - p)) * tile.f_tshadow
    return red * dark, nir * dark


def _atmosphere(world: _World, tile: _Tile, wx: _Weather, red: np.ndarray, nir: np.ndarray) -> tuple[np.ndarray, ...]:
    """Snow, cloud shadow, cloud and cirrus on top of the surface; returns (red, nir, snow, shadow, cloud, cirrus)."""
    zero = np.zeros_like(red)
    snow = (
        np.clip((tile.elev - _snow_threshold(world, wx.snow_fraction)) / 0.15, 0, 1).astype(np.float32)
        if wx.snow_fraction > 0
        else zero
    )
    red, nir = red + snow * (0.70 - red), nir + snow * (0.65 - nir)
    cloud = shadow = cirrus = zero
    if wx.alpha is not None:
        cloud = tile.at_wx(wx.alpha)
        shadow = tile.at_shadow(wx.alpha) * (cloud == 0)
        red, nir = red * (1 - 0.60 * shadow), nir * (1 - 0.68 * shadow)  # diffuse skylight: NIR drops more
        red, nir = red + cloud * (0.45 - red), nir + cloud * (0.50 - nir)
    if wx.cirrus is not None:
        cirrus = tile.at_wx(wx.cirrus)
        red, nir = red + 0.05 * cirrus, nir + 0.04 * cirrus
    return red, nir, snow, shadow, cloud, cirrus


def _scl(
    tile: _Tile,
    wx: _Weather,
    f_scar: np.ndarray,
    snow: np.ndarray,
    shadow: np.ndarray,
    cloud: np.ndarray,
    cirrus: np.ndarray,
    *,
    snow_flag_min: float = 0.0,
    cloud_flag_min: float = 0.0,
) -> np.ndarray:
    """20 m scene classification. Cloud-like classes are conservative (any affected 10 m pixel flags the 20 m one),
    except on `missed_shadow` dates, where shadows keep the class of the ground below, as real SCL sometimes does, and
    where the scenario leaves thin cloud (< cloud_flag_min), a missed cloud part or partial snow (<= snow_flag_min)
    unflagged."""
    scl = np.full((tile.height // 2, tile.width // 2), 4, np.uint8)
    scl[_block(f_scar + tile.f_out, "mean") >= 0.5] = 5
    scl[tile.water20] = 6
    scl[tile.tshadow20] = 2
    if wx.snow_fraction > 0:
        scl[_block(snow, "max") > snow_flag_min] = 11
    if wx.alpha is not None and not wx.missed_shadow:
        scl[_block(shadow, "max") > 0.01] = 3
    if wx.cirrus is not None:
        scl[_block(cirrus, "max") > 0.1] = 10
    if wx.alpha is not None:
        flagged = cloud if cloud_flag_min <= 0 else np.where(cloud >= cloud_flag_min, cloud, 0)
        if wx.missed_part is not None:
            flagged = np.where(tile.at_wx(wx.missed_part) > 0.5, 0, flagged)
        cmax = _block(flagged, "max")
        scl[cmax > 0] = 8
        scl[cmax >= 0.5] = 9
    scl[~tile.valid20] = 0
    return scl


def _to_dn(refl: np.ndarray, valid: np.ndarray, offset: bool) -> np.ndarray:
    """DN = round((reflectance + 0.1 if baseline >= 04.00) / 1e-4), clipped to 1..65535; 0 = no data."""
    dn = np.rint((refl + (OFFSET_DN * DN_SCALE if offset else 0.0)) / DN_SCALE)
    out = np.clip(dn, 1, 65535).astype(np.uint16)
    out[~valid] = 0
    return out


def _render(
    world: _World, tile: _Tile, d: date, wx: _Weather, scar: Polygon, offset: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B04 DN, B08 DN, SCL) of one tile on one date."""
    f_scar = tile.scar_fraction(scar)
    f_rim = tile.scar_fraction(scar.buffer(world.scn.rim_m)) - f_scar if world.scn.rim_m > 0 else None
    red, nir = _surface(world, tile, d, f_scar, f_rim)
    red, nir, snow, shadow, cloud, cirrus = _atmosphere(world, tile, wx, red, nir)
    shape = red.shape
    red = red + NOISE * rng.standard_normal(shape, dtype=np.float32)
    nir = nir + NOISE * rng.standard_normal(shape, dtype=np.float32)
    return (
        _to_dn(red, tile.valid10, offset),
        _to_dn(nir, tile.valid10, offset),
        _scl(
            tile,
            wx,
            f_scar,
            snow,
            shadow,
            cloud,
            cirrus,
            snow_flag_min=world.scn.snow_flag_min,
            cloud_flag_min=world.scn.cloud_flag_min,
        ),
    )


def _write_cog(path: Path, arr: np.ndarray, transform: Affine, epsg: int) -> None:
    with rasterio.open(
        path,
        "w",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=f"EPSG:{epsg}",
        transform=transform,
        **COG_PROFILE,
    ) as ds:
        ds.write(arr, 1)


# --- STAC items ----------------------------------------------------------------------------------------------------


def _baseline(d: date, k: int, seed: int) -> tuple[str, bool]:
    """(processing baseline, reprocessed). Exactly 1 in 10 pre-2022-01-25 acquisitions (k + seed = 7 mod 10) is
    reprocessed to 05.00 (with the +1000 offset): loaders must key on the baseline, not on the date."""
    if d >= OFFSET_FROM:
        return (NEW_BASELINES[1] if d >= BASELINE_0509_FROM else NEW_BASELINES[0]), False
    if (k + seed) % 10 == 7:
        return REPROCESSED_BASELINE, True
    return OLD_BASELINE, False


def _sun(d: date, lat: float) -> tuple[float, float]:
    """Approximate mean solar (zenith, azimuth) at ~10:30 local time, for the item properties."""
    decl = 23.44 * math.sin(2 * math.pi * (d.timetuple().tm_yday - 81) / 365.25)
    return 90 - (90 - abs(lat - decl)) * 0.88, 150 - 0.4 * decl


def _percentages(scl: np.ndarray) -> dict[str, float]:
    """The SCL-derived item properties, computed from the tile's own SCL like ESA's (valid pixels only)."""
    counts = np.bincount(scl.ravel(), minlength=12)
    valid = max(int(counts[1:].sum()), 1)
    props = {k: round(100.0 * float(counts[list(v)].sum()) / valid, 6) for k, v in SCL_PERCENTAGES.items()}
    props["s2:nodata_pixel_percentage"] = round(100.0 * float(counts[0]) / scl.size, 6)
    props["eo:cloud_cover"] = cloud_cover(scl)
    return props


def cloud_cover(scl: np.ndarray) -> float:
    """`eo:cloud_cover` as written in the items: % of the tile's valid SCL pixels in classes 8, 9, 10."""
    counts = np.bincount(scl.ravel(), minlength=12)
    return round(100.0 * float(counts[list(SCL_CLOUDS)].sum()) / max(int(counts[1:].sum()), 1), 6)


def _ids(d: date, k: int, tile: _Tile, tile_index: int, reprocessed: bool) -> tuple[str, datetime, datetime, str, int]:
    """(item id, acquisition time, generation time, platform letter, absolute orbit), named like PC's items. Both
    tiles of an acquisition share its datetime; reprocessed scenes carry a 2023 generation time."""
    sat = "A" if k % 2 == 0 else "B"
    acq = datetime(d.year, d.month, d.day, 4, 17, 1 if sat == "A" else 0)
    gen = acq + timedelta(hours=4, minutes=14, seconds=1 + 217 * tile_index)
    if reprocessed:
        gen = datetime(2023, 3, 1, 9, 0, 0) + timedelta(hours=k % 24, minutes=7 * tile_index, seconds=k % 60)
    orbit = (30000 if sat == "A" else 19000) + (d - EPOCH).days * 143 // 10
    item_id = f"S2{sat}_MSIL2A_{acq:%Y%m%dT%H%M%S}_R{RELATIVE_ORBIT:03d}_T{tile.mgrs}_{gen:%Y%m%dT%H%M%S}"
    return item_id, acq, gen, sat, orbit


def _item(
    d: date,
    k: int,
    tile: _Tile,
    tile_index: int,
    baseline: str,
    reprocessed: bool,
    scl: np.ndarray,
    item_dir: Path,
    lat: float,
) -> dict[str, Any]:
    item_id, acq, gen, sat, orbit = _ids(d, k, tile, tile_index, reprocessed)
    geom = tile.footprint
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
        ],
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": json.loads(json.dumps(mapping(geom))),
        "bbox": [round(v, 8) for v in geom.bounds],
        "properties": {**_properties(d, tile, baseline, acq, gen, sat, orbit, lat), **_percentages(scl)},
        "links": [],
        "assets": _assets(tile, item_dir),
    }


def _properties(
    d: date, tile: _Tile, baseline: str, acq: datetime, gen: datetime, sat: str, orbit: int, lat: float
) -> dict[str, Any]:
    """The Planetary Computer item properties that do not depend on the pixels."""
    stamp, gstamp = f"{acq:%Y%m%dT%H%M%S}", f"{gen:%Y%m%dT%H%M%S}"
    zen, azi = _sun(d, lat)
    doy = d.timetuple().tm_yday
    return {
        "datetime": acq.strftime("%Y-%m-%dT%H:%M:%S.024000Z"),
        "platform": f"Sentinel-2{sat}",
        "proj:epsg": tile.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": tile.mgrs,
        "constellation": "Sentinel 2",
        "s2:granule_id": f"S2{sat}_OPER_MSI_L2A_TL_ESRI_{gstamp}_A{orbit:06d}_T{tile.mgrs}_N{baseline}",
        "s2:datatake_id": f"GS2{sat}_{stamp}_{orbit:06d}_N{baseline}",
        "s2:product_uri": f"S2{sat}_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R{RELATIVE_ORBIT:03d}"
        f"_T{tile.mgrs}_{gstamp}.SAFE",
        "s2:datastrip_id": f"S2{sat}_OPER_MSI_L2A_DS_ESRI_{gstamp}_S{stamp}_N{baseline}",
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": gen.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "sat:relative_orbit": RELATIVE_ORBIT,
        "s2:mean_solar_zenith": round(zen, 6),
        "s2:mean_solar_azimuth": round(azi, 6),
        "s2:processing_baseline": baseline,
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:reflectance_conversion_factor": round(1 + 0.0334 * math.cos(2 * math.pi * (doy - 3) / 365.25), 9),
    }


def _assets(tile: _Tile, item_dir: Path) -> dict[str, Any]:
    out = {}
    for key, res in (("B04", 10.0), ("B08", 10.0), ("SCL", 20.0)):
        a = {
            "href": str(item_dir / f"{key}.tif"),
            "proj:bbox": list(tile.bbox),
            "proj:shape": [round(tile.height * 10 / res), round(tile.width * 10 / res)],
            "proj:transform": [res, 0.0, tile.x0, 0.0, -res, tile.y0],
            "gsd": res,
            "type": COG_TYPE,
            "roles": ["data"],
        }
        if key in BAND_INFO:
            a["title"], band = BAND_INFO[key]
            a["eo:bands"] = [band]
        else:
            a["title"] = "Scene classfication map (SCL)"
        out[key] = a
    return out


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A minimal stand-in for PC's sentinel-2-l2a collection document (no network links)."""
    bounds = np.array([it["bbox"] for it in items]) if items else np.array([[-180, -90, 180, 90]])
    times = [it["properties"]["datetime"] for it in items] or [None]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "sentinel-2-l2a",
        "title": "Sentinel-2 Level-2A",
        "description": "Synthetic Sentinel-2 L2A scenes generated by scarmon.demo.synthetic (Planetary Computer layout: "
        "no raster:bands; DN carry +1000 from processing baseline 04.00 on).",
        "license": "proprietary",
        "keywords": ["Sentinel", "Copernicus", "Synthetic", "Reflectance"],
        "providers": [{"name": "scarmon.demo.synthetic", "roles": ["producer", "processor", "host"]}],
        "extent": {
            "spatial": {"bbox": [[*bounds[:, :2].min(axis=0).tolist(), *bounds[:, 2:].max(axis=0).tolist()]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {"gsd": [10, 20], "eo:bands": [b for _, b in BAND_INFO.values()]},
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json"],
        "links": [],
    }


# --- The catalog ---------------------------------------------------------------------------------------------------


def generate_catalog(
    out_dir: str | Path,
    site: Site | dict[str, Any],
    *,
    scenario: str = "creep-failure",
    start: str | date = "2021-06-01",
    end: str | date = "2023-06-01",
    seed: int = 0,
    revisit_days: int = 5,
    covering_share: float = 0.0,
) -> Path:
    """Write out_dir/collection.json, out_dir/items.json (ItemCollection sorted by datetime, absolute local hrefs),
    COGs under out_dir/data/<item-id>/{B04,B08,SCL}.tif and out_dir/truth.json; return the items.json path.

    Acquisitions fall on EPOCH + k * revisit_days within [start, end]. Those on a prompt date of the site are
    rendered clear and with both tiles, so the frame the user prompted on is usable. On a `covering_share` of the
    acquisitions (0: none, 1: all; see `covering_tile`), one tile's footprint covers the whole AOI and the other
    still covers ~78 % of it; truth.json then names that tile per acquisition (`covering_tile`)."""
    if not 0.0 <= covering_share <= 1.0:
        raise ValueError(f"covering_share must be in [0, 1], got {covering_share}")
    site = _as_site(site)
    out = Path(out_dir).resolve()
    (out / "data").mkdir(parents=True, exist_ok=True)
    world = _World(site, get_scenario(scenario), seed)
    tiles = _tiles(world)
    covers = _tiles(world, COVERING_CUT) if covering_share > 0 else tiles
    clear = {p.date for p in site.prompts}
    results = []
    for d in acquisition_dates(start, end, revisit_days):
        k = (d - EPOCH).days // revisit_days
        cover = covering_tile(k, covering_share)
        pass_tiles = [c if i == cover else t for i, (t, c) in enumerate(zip(tiles, covers, strict=True))]
        items, rec = _acquisition(world, pass_tiles, d, k, d in clear, out)
        if covering_share > 0:  # the default truth.json stays as it was
            rec["covering_tile"] = None if cover is None else tiles[cover].mgrs
        results.append((items, rec))
    items = sorted((it for its, _ in results for it in its), key=lambda it: (it["properties"]["datetime"], it["id"]))
    _dump(out / "collection.json", _collection(items))
    _dump(out / "truth.json", _truth_doc(world, tiles, [rec for _, rec in results]))
    return _dump(out / "items.json", {"type": "FeatureCollection", "features": items})


def _acquisition(
    world: _World, tiles: list[_Tile], d: date, k: int, clear: bool, out: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render and write the tiles of one acquisition; return its items and its truth record."""
    rngs = _rngs(world, d)
    wx = _draw_weather(world, d, rngs, clear)
    baseline, reprocessed = _baseline(d, k, world.seed)
    scar = world.scar(d)
    items = []
    for i, tile in enumerate(tiles):
        if wx.missing_tile == i:
            continue
        red, nir, scl = _render(world, tile, d, wx, scar, baseline != OLD_BASELINE, rngs[3 + i])
        item_dir = out / "data" / _ids(d, k, tile, i, reprocessed)[0]
        item_dir.mkdir(exist_ok=True)
        _write_cog(item_dir / "B04.tif", red, tile.transform, tile.epsg)
        _write_cog(item_dir / "B08.tif", nir, tile.transform, tile.epsg)
        _write_cog(item_dir / "SCL.tif", scl, tile.transform20, tile.epsg)
        items.append(_item(d, k, tile, i, baseline, reprocessed, scl, item_dir, world.site.polygon.centroid.y))
    return items, _record(world, tiles, d, wx, scar, baseline, reprocessed, items)


def _record(
    world: _World,
    tiles: list[_Tile],
    d: date,
    wx: _Weather,
    scar: Polygon,
    baseline: str,
    reprocessed: bool,
    items: list[dict[str, Any]],
) -> dict[str, Any]:
    """What truth.json says about one acquisition (for benchmarks and for debugging a tracker)."""
    unflagged = world.unflagged(wx)
    return {
        "date": d.isoformat(),
        "scar_area_m2": round(scar.area, 3),
        "growth": growth_factor(world.scn, d),
        "sky": wx.state,
        "aoi_cloud_fraction": round(wx.cloud_fraction, 4),
        "cirrus": wx.cirrus is not None,
        "snow_fraction": round(wx.snow_fraction, 4),
        "missed_shadow": wx.missed_shadow,
        "unflagged_cloud_fraction": round(unflagged[0], 4),
        "unflagged_snow_fraction": round(unflagged[1], 4),
        "missing_tile": None if wx.missing_tile is None else tiles[wx.missing_tile].mgrs,
        "processing_baseline": baseline,
        "reprocessed": reprocessed,
        "items": [it["id"] for it in items],
    }


def _truth_doc(world: _World, tiles: list[_Tile], records: list[dict[str, Any]]) -> dict[str, Any]:
    scn = world.scn
    return {
        "scenario": scn.name,
        "description": scn.description,
        "seed": world.seed,
        "site_id": world.site.id,
        "epsg": world.fr.epsg,
        "tiles": [{"mgrs": t.mgrs, "epsg": t.epsg, "covers": "east" if t.east else "west"} for t in tiles],
        "events": [list(e) for e in scn.events],
        "growth": [list(g) for g in scn.growth],
        "not_scar": {
            "rim_m": scn.rim_m,
            "deciduous": [list(b) for b in scn.deciduous],
            "cloud_flag_min": scn.cloud_flag_min,
            "snow_flag_min": scn.snow_flag_min,
        },
        "acquisitions": records,
    }


def _dump(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path
