from dataclasses import replace

import numpy as np
import pytest

from scarmon.tracking.features import confidence_flags, measure, same_season_change


def disk(cx, cy, r, n=200):
    y, x = np.ogrid[:n, :n]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


@pytest.mark.parametrize("dx, dy, azimuth", [(10, 0, 90), (0, -10, 0), (-10, 0, 270), (0, 10, 180)])
def test_expansion_azimuth_points_where_the_scar_grew(dx, dy, azimuth):
    prev = disk(100, 100, 30)
    now = prev | disk(100 + dx, 100 + dy, 30)  # rows grow southward, so -dy is north
    m = measure(now, prev, pixel_m=2.0, days=10)
    assert m["expansion_azimuth_deg"] == pytest.approx(azimuth, abs=1)
    assert m["area_m2"] == now.sum() * 4 and m["change_m2"] == (now.sum() - prev.sum()) * 4


def test_advance_rate_is_added_area_over_perimeter_per_day():
    prev, now = disk(100, 100, 30), disk(100, 100, 35)
    rate = measure(now, prev, pixel_m=2.0, days=10)["advance_m_per_day"]
    assert rate == pytest.approx(5 * 2.0 / 10, rel=0.15)  # 5 px = 10 m of boundary advance in 10 days


def test_first_frame_has_no_change():
    m = measure(disk(50, 50, 10), None, pixel_m=2.0, days=None)
    assert set(m) == {"area_m2"}


def test_same_season_change_needs_a_frame_a_year_before():
    dates = ["2021-06-01", "2021-09-01", "2022-06-05", "2022-06-20"]
    areas = [100.0, 110.0, 150.0, 160.0]
    assert same_season_change(dates, areas, 2) == pytest.approx(50.0)
    assert same_season_change(dates, areas, 1) is None


def test_low_confidence_spike_needs_both_neighbours_and_a_persistent_jump_is_not_flagged():
    areas = [100, 101, 150, 102, 103, 250, 252]  # a one-frame spike, then a real failure that persists
    clear = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.85]
    flags = confidence_flags(areas, clear)
    assert [f for f, _ in flags] == [False, False, True, False, False, False, True]
    assert "spike of +49%" in flags[2][1] and "clear fraction 0.85" in flags[6][1]
    assert (
        not confidence_flags([100, 60, 100], [1, 1, 1])[0][0]
        and "dip" in confidence_flags([100, 60, 100], [1, 1, 1])[1][1]
    )


def test_scar_under_cloud_is_low_confidence_even_when_the_aoi_is_clear():
    from scarmon.tracking.features import scar_clear_fraction

    mask = disk(100, 100, 20)
    valid = np.ones(mask.shape, bool)
    valid[70:130, 70:130] = False  # a cloud exactly on the scar: 9 % of the AOI
    sc = scar_clear_fraction(valid, mask)
    assert sc < 0.5 and scar_clear_fraction(np.ones(mask.shape, bool), mask) == 1.0
    flags = confidence_flags([100, 101], [0.95, 0.95], scar_clear=[1.0, sc])
    assert flags[0] == (False, "") and flags[1][0] and "of the scar under cloud" in flags[1][1]
    assert scar_clear_fraction(valid, np.zeros(mask.shape, bool)) is None


def test_csv_row_is_rounded_for_people_and_flags_never_read_equal_numbers():
    from scarmon.tracking.features import Observation

    obs = Observation("2021-06-06", "S2B", area_m2=70120.0, clear_fraction=0.8945, change_pct=0.5102918410641591)
    obs = replace(obs, advance_m_per_day=0.1191968935496748, change_m2=356.0)
    row = obs.to_csv_row()
    assert (row["change_pct"], row["advance_m_per_day"], row["clear_fraction"]) == (0.51, 0.119, 0.8945)
    assert obs.to_row()["change_pct"] == 0.5102918410641591  # series.json: unrounded
    assert confidence_flags([100.0], [0.8951])[0][1] == "clear fraction 0.895 < 0.900"
