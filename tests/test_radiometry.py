import numpy as np
import pytest

from scarmon.ingest.radiometry import (
    baseline_has_offset,
    ndvi,
    offset_contradicted,
    reflectance_scaling,
    to_reflectance,
    video_frame,
)


def item(baseline=None, raster_bands=None, **props):
    asset = {"href": "x.tif"}
    if raster_bands is not None:
        asset["raster:bands"] = raster_bands
    p = dict(props)
    if baseline:
        p["s2:processing_baseline"] = baseline
    return {"properties": p, "assets": {"B04": asset}}


@pytest.mark.parametrize(
    "baseline, expected",
    [("02.12", False), ("03.01", False), ("04.00", True), ("05.11", True), (None, False), ("bad", False)],
)
def test_baseline_offset(baseline, expected):
    assert baseline_has_offset(baseline) is expected


def test_scaling_precedence():
    assert reflectance_scaling(item("02.12"), "B04") == (1e-4, 0.0)
    assert reflectance_scaling(item("05.11"), "B04") == pytest.approx((1e-4, -0.1))
    # raster:bands wins over the baseline rule (Earth Search c1)
    assert reflectance_scaling(item("05.11", [{"scale": 0.0001, "offset": -0.1}]), "B04") == pytest.approx((1e-4, -0.1))
    assert reflectance_scaling(item("05.11", [{"scale": 0.0002, "offset": 0}]), "B04") == (0.0002, 0.0)
    # Earth Search legacy: DN already harmonized, raster:bands offset ignored
    assert reflectance_scaling(
        item("05.09", [{"scale": 0.0001, "offset": -0.1}], **{"earthsearch:boa_offset_applied": True}), "B04"
    ) == (1e-4, 0.0)


def test_offset_keeps_ndvi_across_baseline_change():
    red_refl, nir_refl = 0.05, 0.30
    old = ndvi(
        to_reflectance(np.array([red_refl * 1e4]), 1e-4, 0.0), to_reflectance(np.array([nir_refl * 1e4]), 1e-4, 0.0)
    )
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


# --- Every catalog's metadata shape (../shared/stac_items): which offset the DN carry -----------------------------


def es_v1(baseline, applied, offset=-0.1):
    """Earth Search v1 sentinel-2-l2a: raster:bands always declares offset -0.1, earthsearch:boa_offset_applied."""
    props = {"s2:processing_baseline": baseline, "earthsearch:payload_id": "roda-sentinel2/x"}
    if applied is not None:
        props["earthsearch:boa_offset_applied"] = applied
    return {
        "collection": "sentinel-2-l2a",
        "properties": props,
        "assets": {"red": {"href": "x.tif", "raster:bands": [{"scale": 0.0001, "offset": offset}]}},
    }


@pytest.mark.parametrize(
    "baseline, applied, expected",
    [
        ("02.14", False, 0.0),  # pre-04.00 DN carry no offset, whatever raster:bands declares
        ("02.14", None, 0.0),
        ("05.09", False, -0.1),  # the DN still carry +1000
        ("05.09", None, -0.1),
        ("05.09", True, 0.0),  # already removed by Earth Search
        ("04.00", False, -0.1),
    ],
)
def test_earth_search_v1_legacy_offset(baseline, applied, expected):
    assert reflectance_scaling(es_v1(baseline, applied), "red") == pytest.approx((1e-4, expected))


def test_earth_search_c1_keeps_raster_bands():
    c1 = {
        "collection": "sentinel-2-c1-l2a",
        "properties": {"s2:processing_baseline": "02.14", "earthsearch:payload_id": "roda-sentinel-2-c1-l2a/x"},
        "assets": {"red": {"href": "x.tif", "raster:bands": [{"scale": 0.0001, "offset": -0.1}]}},
    }
    assert reflectance_scaling(c1, "red") == pytest.approx((1e-4, -0.1))  # c1 harmonised every baseline


@pytest.mark.parametrize(
    "product_id, extra, expected",
    [
        ("S2A_MSIL2A_20200714T115221_N0214_R123_T28QCH_20200714T191310", {}, 0.0),
        ("S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH_20220714T191310", {}, -0.1),
        ("S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH_20220714T191310", {"sentinel:boa_offset_applied": True}, 0.0),
        (
            "S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH_20220714T191310",
            {"sentinel:processing_baseline": "02.14"},
            0.0,
        ),
    ],
)
def test_earth_search_v0_sentinel_properties(product_id, extra, expected):
    v0 = {
        "collection": "sentinel-s2-l2a-cogs",
        "properties": {"sentinel:product_id": product_id, "sentinel:sequence": "0", **extra},
        "assets": {"B04": {"href": "x.tif"}},
    }
    assert reflectance_scaling(v0, "B04") == pytest.approx((1e-4, expected))


@pytest.mark.parametrize(
    "baseline, expected",
    [(4, True), ("4", True), (4.0, True), (5.09, True), (3.01, False), ("3", False), ("04.00", True)],
)
def test_numeric_baselines(baseline, expected):
    assert baseline_has_offset(baseline) is expected
    assert reflectance_scaling(item(baseline), "B04")[1] == pytest.approx(-0.1 if expected else 0.0)


def test_offset_sanity_check():
    land = np.random.default_rng(0).integers(1300, 4000, 1000).astype(np.uint16)  # DN with the +1000
    assert not offset_contradicted(land, 1e-4, -0.1)
    assert offset_contradicted(land - 1000, 1e-4, -0.1)  # same scene without the +1000: offset would go negative
    assert not offset_contradicted(land - 1000, 1e-4, 0.0)
    assert not offset_contradicted(np.zeros(10, np.uint16), 1e-4, -0.1)  # no data: nothing to say
