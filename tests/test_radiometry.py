import numpy as np
import pytest

from scarmon.ingest.radiometry import baseline_has_offset, ndvi, reflectance_scaling, to_reflectance, video_frame


def item(baseline=None, raster_bands=None, **props):
    asset = {"href": "x.tif"}
    if raster_bands is not None:
        asset["raster:bands"] = raster_bands
    p = dict(props)
    if baseline:
        p["s2:processing_baseline"] = baseline
    return {"properties": p, "assets": {"B04": asset}}


@pytest.mark.parametrize("baseline, expected", [("02.12", False), ("03.01", False), ("04.00", True), ("05.11", True), (None, False), ("bad", False)])
def test_baseline_offset(baseline, expected):
    assert baseline_has_offset(baseline) is expected


def test_scaling_precedence():
    assert reflectance_scaling(item("02.12"), "B04") == (1e-4, 0.0)
    assert reflectance_scaling(item("05.11"), "B04") == pytest.approx((1e-4, -0.1))
    # raster:bands wins over the baseline rule (Earth Search c1)
    assert reflectance_scaling(item("05.11", [{"scale": 0.0001, "offset": -0.1}]), "B04") == pytest.approx((1e-4, -0.1))
    assert reflectance_scaling(item("05.11", [{"scale": 0.0002, "offset": 0}]), "B04") == (0.0002, 0.0)
    # Earth Search legacy: DN already harmonized, raster:bands offset ignored
    assert reflectance_scaling(item("05.09", [{"scale": 0.0001, "offset": -0.1}], **{"earthsearch:boa_offset_applied": True}), "B04") == (1e-4, 0.0)


def test_offset_keeps_ndvi_across_baseline_change():
    red_refl, nir_refl = 0.05, 0.30
    old = ndvi(to_reflectance(np.array([red_refl * 1e4]), 1e-4, 0.0), to_reflectance(np.array([nir_refl * 1e4]), 1e-4, 0.0))
    s, o = reflectance_scaling(item("04.00"), "B04")
    dn = lambda r: np.array([(r + 0.1) * 1e4])
    new = ndvi(to_reflectance(dn(red_refl), s, o), to_reflectance(dn(nir_refl), s, o))
    wrong = ndvi(to_reflectance(dn(red_refl), 1e-4, 0), to_reflectance(dn(nir_refl), 1e-4, 0))
    assert new[0] == pytest.approx(old[0], abs=1e-6)
    assert abs(wrong[0] - old[0]) > 0.1  # the bug this guards against


def test_nodata_and_dark_pixels():
    refl = to_reflectance(np.array([0, 500], np.uint16), 1e-4, -0.1)
    assert np.isnan(refl[0]) and refl[1] == pytest.approx(-0.05)
    v = ndvi(np.array([np.nan, -0.01, 0.0]), np.array([0.3, 0.02, 0.0]))
    assert np.isnan(v[0]) and v[1] == pytest.approx(1.0) and np.isnan(v[2])


def test_video_frame_is_fixed_mapping():
    a = np.array([[-0.2, 0.3, 0.8, 0.95]], np.float32)
    assert video_frame(a).tolist() == [[0, 128, 255, 255]]
    # same NDVI -> same gray, whatever else is in the frame (no per-frame stretch)
    assert video_frame(np.array([[0.3, 0.31]]))[0, 0] == video_frame(np.array([[0.3, -1.0]]))[0, 0]
    assert video_frame(a, np.array([[True, False, True, True]]))[0, 1] == 0
