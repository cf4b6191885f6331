"""The spectral validity test at ingestion: bright cloud and snow SCL missed become 'not observed' (NaN in the NDVI,
0 in the video frame), its share is recorded per frame, and the tracker's low-confidence flag counts it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from scarmon import defaults
from scarmon.grid import SiteGrid
from scarmon.ingest.frames import decode_ndvi, decode_png
from scarmon.ingest.loading import Layers, bright_warning, load_ndvi, read_scl, spectral_layers
from scarmon.ingest.pipeline import Context, process
from scarmon.ingest.radiometry import bright_mask, warm_season
from scarmon.ingest.scenes import Scene
from scarmon.site import parse_site
from scarmon.store.sequence import FrameEntry, Manifest
from tests.test_reader import EPSG, ArrayReader

# --- The pure test -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "red, nir, expected",
    [
        (0.45, 0.50, True),  # cloud: bright, NIR/red 1.1
        (0.60, 0.58, True),  # thick cloud, NIR slightly below red
        (0.70, 0.65, True),  # snow: brightest in red, NIR a bit lower
        (0.90, 0.80, True),  # fresh snow
        (0.35, 0.40, True),  # thin-ish cloud or half snow over soil, still bright and flat
        (0.20, 0.24, False),  # bare soil / fresh scar: not bright
        (0.28, 0.33, False),  # bright soil, just under the threshold
        (0.32, 0.45, False),  # bright sand or rock: bright but with a soil's red edge (NIR/red 1.4)
        (0.04, 0.30, False),  # vegetation
        (0.05, 0.02, False),  # water
        (np.nan, 0.5, False),  # no data
        (0.5, np.nan, False),
    ],
)
def test_bright_mask_cloud_and_snow_not_soil_or_vegetation(red, nir, expected):
    out = bright_mask(np.array([red], np.float32), np.array([nir], np.float32))
    assert out.dtype == bool and bool(out[0]) is expected


def test_bright_mask_threshold_is_the_sites():
    red, nir = np.array([0.35, 0.50]), np.array([0.40, 0.55])
    assert bright_mask(red, nir).tolist() == [True, True]
    assert bright_mask(red, nir, red_min=0.45).tolist() == [False, True]  # a bright-scar site raised it
    assert bright_mask(red, nir, max_nir_red=1.05).tolist() == [False, False]


def test_warm_season_by_hemisphere():
    assert warm_season(7, 31.0) and not warm_season(1, 31.0)
    assert warm_season(1, -33.0) and not warm_season(7, -33.0)


def test_spectral_layers_mask_bright_clear_pixels_only():
    red = np.array([[0.45, 0.20, 0.04, np.nan], [0.45, 0.20, 0.04, 0.70]], np.float32)
    nir = np.array([[0.50, 0.24, 0.30, np.nan], [0.50, 0.24, 0.30, 0.65]], np.float32)
    clear = np.array([[True, True, True, True], [False, True, True, True]])
    layers = spectral_layers(np.stack([red, nir]), clear, 0.30)
    assert layers.bright.tolist() == [[True, False, False, False], [False, False, False, True]]
    assert np.isnan(layers.ndvi).tolist() == [[True, False, False, True], [True, False, False, True]]
    # 2 bright of the 6 clear pixels with data (the NaN one has none, the SCL-flagged one is not SCL-clear)
    assert layers.bright_fraction(np.ones_like(clear)) == pytest.approx(2 / 6)
    aoi = np.zeros_like(clear)
    aoi[:, 1:3] = True
    assert layers.bright_fraction(aoi) == 0.0
    off = spectral_layers(np.stack([red, nir]), clear, None)
    assert not off.bright.any() and np.isfinite(off.ndvi[0, 0])


def test_bright_fraction_of_an_aoi_without_clear_pixels_is_zero():
    layers = Layers(np.full((2, 2), np.nan, np.float32), np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    assert layers.bright_fraction(np.ones((2, 2), bool)) == 0.0


def test_warning_only_on_a_large_share_of_a_snow_free_warm_season_frame():
    kw = dict(lat=31.0, bright_red_min=0.3, scene_id="S2A_20220710_R033")
    why = bright_warning(0.2, month=7, snow_seen=False, **kw)
    assert why is not None and "bright_red_min" in why and "20 %" in why
    assert bright_warning(0.2, month=1, snow_seen=False, **kw) is None  # winter: snow SCL missed is likely
    assert bright_warning(0.2, month=7, snow_seen=True, **kw) is None  # SCL saw snow: a snow line's fringe
    assert bright_warning(defaults.BRIGHT_WARN_FRACTION / 2, month=7, snow_seen=False, **kw) is None


# --- A scene with a cloud SCL missed -----------------------------------------------------------------------------

T10, T20 = Affine(10, 0, 400000, 0, -10, 3500000), Affine(20, 0, 400000, 0, -20, 3500000)
GRID = SiteGrid(EPSG, 2.0, 400100.0, 3499900.0, 200, 200)  # 400 m x 400 m inside the 600 m tile
CLOUD = (slice(20, 30), slice(20, 30))  # 10 m pixels: grid columns/rows 50-100 (100 m x 100 m)
SAND = (slice(20, 30), slice(35, 45))  # bright sand with a soil's red edge: must stay observed


def scene_with_missed_cloud(date: str = "2022-07-10"):
    red = np.full((60, 60), 400, np.uint16)  # vegetation, red 0.04
    nir = np.full((60, 60), 3000, np.uint16)
    red[CLOUD], nir[CLOUD] = 4500, 5000  # cloud: red 0.45, NIR 0.50 ...
    red[SAND], nir[SAND] = 3200, 4500  # sand: red 0.32, NIR 0.45
    scl = np.full((30, 30), 4, np.uint8)  # ... that SCL calls vegetation
    item = {
        "id": "A",
        "properties": {"datetime": f"{date}T04:00:00Z", "s2:processing_baseline": "02.14"},
        "assets": {k: {"href": f"A/{k}"} for k in ("B04", "B08", "SCL")},
    }
    rasters = {"A/B04": (red, T10), "A/B08": (nir, T10), "A/SCL": (scl, T20)}
    sid = f"S2A_{date.replace('-', '')}_R001"
    return Scene(sid, f"{date}T04:00:00Z", (item,)), ArrayReader(rasters)


def cloud_on_grid() -> np.ndarray:
    """Grid pixels whose centre lies in the cloud's 10 m pixels, away from its bilinear edge (1 px of 10 m)."""
    out = np.zeros(GRID.shape, bool)
    r0, c0 = (3500000 - 3499900) // 2, (400100 - 400000) // 2  # grid offset in 2 m pixels: 50, 50
    out[21 * 5 - r0 : 29 * 5 - r0, 21 * 5 - c0 : 29 * 5 - c0] = True
    return out


def sand_on_grid() -> np.ndarray:
    out = np.zeros(GRID.shape, bool)
    out[21 * 5 - 50 : 29 * 5 - 50, 36 * 5 - 50 : 44 * 5 - 50] = True
    return out


def site_dict(**over):
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = [400100.0, 400500.0, 400500.0, 400100.0], [3499500.0, 3499500.0, 3499900.0, 3499900.0]
    ring = [list(to_ll.transform(x, y)) for x, y in zip(xs, ys, strict=True)]
    lon, lat = to_ll.transform(400300.0, 3499700.0)
    return {
        "id": "spectral",
        "aoi": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        "prompts": [{"lon": lon, "lat": lat, "label": 1, "date": "2022-07-10"}],
        "resolution_m": 2.0,
        **over,
    }


def test_load_ndvi_leaves_a_missed_cloud_unobserved_and_bright_sand_observed():
    scene, reader = scene_with_missed_cloud()
    scl, covering = read_scl(scene, GRID, reader)
    out = load_ndvi(scene, covering, scl, GRID, reader)
    assert np.isnan(out[cloud_on_grid()]).all()
    assert np.isfinite(out[sand_on_grid()]).all()
    assert np.isfinite(out[~cloud_on_grid()]).mean() > 0.9
    off = load_ndvi(scene, covering, scl, GRID, reader, bright_red_min=None)
    assert np.isfinite(off).all()  # the test off: the cloud reads as NDVI ~0.05, i.e. as a scar


def test_ingested_frame_records_the_share_and_gives_sam2_the_same_validity(caplog):
    site = parse_site(site_dict())
    scene, reader = scene_with_missed_cloud()
    grid = SiteGrid(EPSG, 2.0, 400100.0, 3499900.0, 200, 200)
    out = process(scene, Context(site, grid, reader, {}, None))
    assert out.frame is not None and out.data is not None
    entry = out.frame
    # the cloud is 100 m x 100 m of the 400 m x 400 m AOI (with its bilinear edge a little more)
    assert entry.bright_fraction == pytest.approx(0.0625, abs=0.01)
    assert entry.clear_fraction == 1.0 and entry.observed_fraction == pytest.approx(1 - entry.bright_fraction)
    ndvi = decode_ndvi(out.data[entry.objects["ndvi"]])
    video = decode_png(out.data[entry.objects["video"]])
    cloud = cloud_on_grid()
    assert np.isnan(ndvi[cloud]).all() and (video[cloud] == 0).all()
    assert (video[np.isfinite(ndvi)] > 0).all()  # the trackers and SAM 2 see one validity
    assert np.isfinite(ndvi[sand_on_grid()]).all()
    # a July frame with no snow losing 6 % of its clear pixels: the log names the site setting
    assert any("bright_red_min" in r.getMessage() for r in caplog.records)
    # round trip through the manifest's JSON
    assert FrameEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry


def test_a_site_that_turned_the_test_off_keeps_its_bright_ground():
    site = parse_site(site_dict(bright_red_min=None))
    scene, reader = scene_with_missed_cloud()
    out = process(scene, Context(site, GRID, reader, {}, None))
    assert out.frame is not None and out.data is not None
    assert out.frame.bright_fraction is None and "bright_fraction" not in out.frame.to_json()
    assert np.isfinite(decode_ndvi(out.data[out.frame.objects["ndvi"]])).all()


def test_a_raised_site_threshold_keeps_a_cloud_of_that_brightness_observed():
    site = parse_site(site_dict(bright_red_min=0.5))
    scene, reader = scene_with_missed_cloud()
    out = process(scene, Context(site, GRID, reader, {}, None))
    assert out.frame is not None and out.frame.bright_fraction == 0.0


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "high"])
def test_site_threshold_must_be_a_reflectance(value):
    with pytest.raises(ValueError, match="bright_red_min"):
        parse_site(site_dict(bright_red_min=value))


# --- The manifest ------------------------------------------------------------------------------------------------


def entry_json(**over):
    d = {
        "date": "2022-07-10",
        "scene_id": "S2A_20220710_R033",
        "datetime": "2022-07-10T04:00:00Z",
        "item_ids": ["A"],
        "processing_baseline": "04.00",
        "coverage": 1.0,
        "clear_fraction": 0.9,
        "objects": {"ndvi": "s/frames/a.tif", "video": "s/frames/a.png"},
    }
    return {**d, **over}


def test_old_manifest_entries_without_the_share_still_load():
    e = FrameEntry.from_json(entry_json())
    assert e.bright_fraction is None and e.observed_fraction == 0.9
    assert "bright_fraction" not in e.to_json()  # written back as it was
    new = Manifest.empty("s")
    doc = json.loads(new.to_json_bytes())
    doc["frames"] = [entry_json()]  # as written before the spectral test existed
    m = Manifest.from_json_bytes(json.dumps(doc).encode(), site_id="s", where="test")
    assert m.frames[0].bright_fraction is None


def test_the_share_round_trips_and_is_checked():
    e = FrameEntry.from_json(entry_json(bright_fraction=0.25))
    assert e.bright_fraction == 0.25 and e.to_json()["bright_fraction"] == 0.25
    assert e.observed_fraction == pytest.approx(0.9 * 0.75)
    assert FrameEntry.from_json(e.to_json()) == e
    with pytest.raises(Exception, match="bright_fraction"):
        FrameEntry.from_json(entry_json(bright_fraction=1.5))
