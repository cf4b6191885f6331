import pytest
from shapely.geometry import box

from scarmon.grid import SNAP_M, SiteGrid, site_grid, utm_epsg


@pytest.mark.parametrize(
    "lon, lat, epsg", [(98.7, 31.08, 32647), (95.99, 31.1, 32646), (96.01, 31.1, 32647), (-70.0, -33.0, 32719)]
)
def test_utm_zone(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_grid_snapped_and_covers_aoi():
    aoi = box(98.6887, 31.0691, 98.7203, 31.0961)
    g = site_grid(aoi, 2.0)
    assert g.epsg == 32647 and g.x0 % SNAP_M == 0 and g.y0 % SNAP_M == 0
    w, s, e, n = g.bounds
    pw, ps, pe, pn = g.project(aoi).bounds
    assert w <= pw and s <= ps and e >= pe and n >= pn and e - pe < SNAP_M + 2 and pn < n < pn + SNAP_M + 2
    assert g.mask(aoi).mean() > 0.95


def test_pixel_round_trip_and_coarse_grid():
    g = site_grid(box(98.69, 31.07, 98.72, 31.10), 2.0)
    col, row = g.lonlat_to_pixel(98.70, 31.08)
    lon, lat = g.pixel_to_lonlat(col - 0.5, row - 0.5)
    assert abs(lon - 98.70) < 1e-7 and abs(lat - 31.08) < 1e-7
    c = g.at_resolution(20.0)
    assert (c.x0, c.y0) == (g.x0, g.y0) and c.width * 10 >= g.width and c.bounds[2] >= g.bounds[2]
    assert SiteGrid.from_dict(g.to_dict()) == g


def test_mask_area_matches_polygon():
    aoi = box(98.69, 31.07, 98.72, 31.10)
    g = site_grid(aoi, 2.0)
    area = g.mask(aoi).sum() * g.pixel_area_m2
    assert area == pytest.approx(g.project(aoi).area, rel=0.002)
