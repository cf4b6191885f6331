import numpy as np

from scarmon.ingest.screening import below, clear_pixels, screen

AOI = np.ones((10, 10), bool)


def test_terrain_shadow_is_clear_cloud_shadow_is_not():
    assert clear_pixels(np.array([2, 4, 5, 6, 7])).all()
    assert not clear_pixels(np.array([0, 1, 3, 8, 9, 10, 11])).any()


def test_clear_scene_accepted():
    scl = np.full((10, 10), 4, np.uint8)
    scl[:3] = 2  # steep slope in terrain shadow
    r = screen(scl, AOI, min_coverage=0.9, max_cloud_fraction=0.2)
    assert r.accepted and r.coverage == 1.0 and r.clear_fraction == 1.0


def test_cloud_over_aoi_only_counts():
    scl = np.full((10, 10), 4, np.uint8)
    scl[:, :5] = 9
    aoi = np.zeros((10, 10), bool)
    aoi[:, 5:] = True
    assert screen(scl, aoi, min_coverage=0.9, max_cloud_fraction=0.2).accepted
    r = screen(scl, AOI, min_coverage=0.9, max_cloud_fraction=0.2)
    assert not r.accepted and r.clear_fraction == 0.5 and "clear fraction 0.50" in r.reason


def test_coverage_rejection_and_shadow_snow():
    scl = np.full((10, 10), 4, np.uint8)
    scl[:2] = 0
    r = screen(scl, AOI, min_coverage=0.9, max_cloud_fraction=0.2)
    assert not r.accepted and r.coverage == 0.8 and "coverage" in r.reason
    scl = np.full((10, 10), 4, np.uint8)
    scl[:2] = 3
    scl[2:4] = 11
    r = screen(scl, AOI, min_coverage=0.9, max_cloud_fraction=0.5)
    assert r.accepted and r.clear_fraction == 0.6


def test_rejection_reason_never_reads_equal_numbers() -> None:
    # 0.8951 clear against 0.90 needed printed "0.90 < 0.90" before.
    assert below(0.8951, 0.9) == "0.895 < 0.900"
    assert below(0.48, 0.9, "min_coverage ") == "0.48 < min_coverage 0.90"
    scl = np.full((100, 100), 4, np.uint8)
    scl[:, :5] = 9  # 5 % cloud against max_cloud_fraction 0.0499...
    aoi = np.ones_like(scl, dtype=bool)
    r = screen(scl, aoi, min_coverage=0.5, max_cloud_fraction=0.0499)
    assert not r.accepted and "clear fraction 0.950 < 0.950" not in str(r.reason)
    assert r.reason is not None and r.reason.startswith("clear fraction 0.9500 < 0.9501")
