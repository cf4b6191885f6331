"""The synthetic Sentinel-2 L2A catalog: structure like Planetary Computer's, radiometry rules, truth, determinism."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import Resampling, reproject

from scarmon.demo import synthetic
from scarmon.grid import site_grid
from scarmon.ingest.radiometry import ndvi, reflectance_scaling, to_reflectance
from scarmon.site import parse_site

# 2021-12-03 and 2022-01-22 are reprocessed (05.00) with seed 0; 2022-01-25 switches to 04.00.
START, END = "2021-12-01", "2022-02-10"
OLD, REPROCESSED, NEW = date(2022, 1, 17), date(2022, 1, 22), (date(2022, 1, 27), date(2022, 2, 1))


def _site_with_clear_dates() -> dict:
    """The demo site plus a vegetation prompt on each date the radiometry test reads: prompt dates are rendered
    clear and complete, so the check does not depend on the weather draw."""
    site = synthetic.demo_site("creep-failure")
    veg = next(p for p in site["prompts"] if p["label"] == 0)
    site["prompts"] += [dict(veg, date=d.isoformat()) for d in (OLD, REPROCESSED, *NEW)]
    return site


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], Path]:
    site = _site_with_clear_dates()
    out = tmp_path_factory.mktemp("synthetic")
    path = synthetic.generate_catalog(out, site, scenario="creep-failure", start=START, end=END, seed=0)
    return site, json.loads(path.read_text())["features"], out


def _by_date(items: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        out[it["properties"]["datetime"][:10]].append(it)
    return out


def test_items_are_structurally_like_planetary_computer(catalog: tuple[dict, list[dict], Path]) -> None:
    _, items, out = catalog
    assert items and len({it["id"] for it in items}) == len(items)
    assert [it["properties"]["datetime"] for it in items] == sorted(it["properties"]["datetime"] for it in items)
    for it in items:
        props = it["properties"]
        assert it["collection"] == "sentinel-2-l2a" and it["stac_version"] == "1.0.0" and it["links"] == []
        assert it["id"].startswith(("S2A_MSIL2A_", "S2B_MSIL2A_")) and f"_T{props['s2:mgrs_tile']}_" in it["id"]
        assert props["platform"] in ("Sentinel-2A", "Sentinel-2B")
        assert set(it["assets"]) == {"B04", "B08", "SCL"}
        for key, asset in it["assets"].items():
            assert "raster:bands" not in asset and asset["roles"] == ["data"]
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert Path(asset["href"]).is_absolute() and Path(asset["href"]).exists()
            with rasterio.open(asset["href"]) as ds:
                assert ds.crs.to_epsg() == props["proj:epsg"]
                assert list(ds.shape) == asset["proj:shape"]
                assert list(ds.transform)[:6] == asset["proj:transform"]
                assert ds.nodata == 0 and ds.dtypes[0] == ("uint8" if key == "SCL" else "uint16")
                assert ds.profile["compress"] == "deflate" and ds.profile["blockxsize"] == 256
                assert ds.transform.c % 20 == 0 and ds.transform.f % 20 == 0
    coll = pystac.Collection.from_file(str(out / "collection.json"))
    assert coll.id == "sentinel-2-l2a"
    assert len(pystac.ItemCollection.from_file(str(out / "items.json"))) == len(items)


def test_two_tiles_in_two_utm_zones_must_be_mosaicked(catalog: tuple[dict, list[dict], Path]) -> None:
    site, items, _ = catalog
    grid = site_grid(parse_site(site).polygon, 20.0)
    aoi = grid.mask(parse_site(site).polygon)
    pairs = [its for its in _by_date(items).values() if len(its) == 2]
    assert pairs
    for its in pairs[:3]:
        assert {it["properties"]["proj:epsg"] for it in its} == {32646, 32647}
        assert {it["properties"]["s2:mgrs_tile"] for it in its} == {"46RGV", "47RKQ"}
        covered = [_read(it, "SCL", grid) > 0 for it in its]
        assert all((c & aoi).sum() / aoi.sum() < 0.9 for c in covered)
        assert ((covered[0] | covered[1]) & aoi).sum() == aoi.sum()


def _read(item: dict, key: str, grid, resampling: Resampling = Resampling.nearest) -> np.ndarray:
    with rasterio.open(item["assets"][key]["href"]) as ds:
        out = np.zeros(grid.shape, ds.dtypes[0])
        reproject(
            rasterio.band(ds, 1),
            out,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=resampling,
            src_nodata=0,
            dst_nodata=0,
        )
    return out


def test_baselines_follow_the_processing_baseline_not_the_date(catalog: tuple[dict, list[dict], Path]) -> None:
    _, items, _ = catalog
    for it in items:
        d, b = date.fromisoformat(it["properties"]["datetime"][:10]), it["properties"]["s2:processing_baseline"]
        assert b in (("04.00", "05.09") if d >= synthetic.OFFSET_FROM else ("02.12", "05.00"))
    reprocessed = {
        it["properties"]["datetime"][:10] for it in items if it["properties"]["s2:processing_baseline"] == "05.00"
    }
    assert REPROCESSED.isoformat() in reprocessed


def test_vegetation_ndvi_is_continuous_across_baselines(catalog: tuple[dict, list[dict], Path]) -> None:
    """A pure-vegetation pixel converted with radiometry.reflectance_scaling gives the same NDVI in old, reprocessed
    and new-baseline items (mid-winter: no phenology change over these two weeks)."""
    site, items, _ = catalog
    veg = next(p for p in site["prompts"] if p["label"] == 0)
    by_date = _by_date(items)
    values = {}
    for d in (OLD, REPROCESSED, *NEW):
        for it in by_date[d.isoformat()]:
            props = it["properties"]
            values[(d, props["s2:processing_baseline"], props["s2:mgrs_tile"])] = _ndvi_at(it, veg)
    baselines = {b for _, b, _ in values}
    assert baselines == {"02.12", "05.00", "04.00"}
    ref = float(np.median(list(values.values())))
    assert 0.3 < ref < 0.5
    assert all(abs(v - ref) < 0.02 for v in values.values()), values


def _ndvi_at(item: dict, point: dict) -> float:
    """NDVI of the 5 x 5 block of 10 m pixels around a lon/lat point (clear vegetation checked on SCL)."""
    epsg = item["properties"]["proj:epsg"]
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(point["lon"], point["lat"])
    bands = {}
    for key in ("B04", "B08", "SCL"):
        with rasterio.open(item["assets"][key]["href"]) as ds:
            row, col = ds.index(x, y)
            half = 2 if key != "SCL" else 1
            dn = ds.read(1, window=((row - half, row + half + 1), (col - half, col + half + 1)))
        if key == "SCL":
            assert (dn == 4).all(), dn
            continue
        bands[key] = np.nanmean(to_reflectance(dn, *reflectance_scaling(item, key)))
    return float(ndvi(np.array([bands["B04"]]), np.array([bands["B08"]]))[0])


def test_cloud_cover_is_computed_from_the_tiles_own_scl(catalog: tuple[dict, list[dict], Path]) -> None:
    _, items, _ = catalog
    covers = []
    for it in items:
        with rasterio.open(it["assets"]["SCL"]["href"]) as ds:
            scl = ds.read(1)
        valid = scl > 0
        expected = 100.0 * np.isin(scl, (8, 9, 10)).sum() / valid.sum()
        assert it["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=1e-4)
        assert it["properties"]["s2:nodata_pixel_percentage"] == pytest.approx(100.0 * (~valid).mean(), abs=1e-4)
        covers.append(expected)
    assert min(covers) == 0.0 and max(covers) > 50.0


def test_truth_area_follows_the_scenarios() -> None:
    areas = {}
    for name in synthetic.SCENARIOS:
        site = synthetic.demo_site(name)
        areas[name] = [
            synthetic.scar_area_m2(site, d, scenario=name)
            for d in ("2021-06-01", "2022-06-20", "2022-07-20", "2022-08-30", "2023-06-01")
        ]
    cf = areas["creep-failure"]
    assert cf[1] / cf[0] == pytest.approx(1.5, rel=1e-3)
    assert cf[2] / cf[1] == pytest.approx(1.6, rel=1e-3)  # first failure
    assert cf[4] / cf[0] == pytest.approx(2.5 * 1.5, rel=1e-6)
    ac = areas["active-creep"]
    assert ac[3] / ac[0] == pytest.approx(4.0, rel=1e-6) and ac[4] < ac[3]
    assert len(set(areas["stable-seasonal"])) == 1
    assert areas["outcrops-river"][4] / areas["outcrops-river"][0] == pytest.approx(2.0, rel=1e-6)


def test_truth_mask_matches_polygon_and_grows_monotonically() -> None:
    site = parse_site(synthetic.demo_site("creep-failure"))
    grid = site_grid(site.polygon, 2.0)
    before = synthetic.truth_mask(site, grid, "2022-06-01", scenario="creep-failure")
    after = synthetic.truth_mask(site, grid, "2022-08-01", scenario="creep-failure")
    area = synthetic.scar_area_m2(site, "2022-08-01", scenario="creep-failure")
    assert after.dtype == bool and after.shape == grid.shape
    assert after.sum() * grid.pixel_area_m2 == pytest.approx(area, rel=0.01)
    assert not (before & ~after).any()
    # the AOI holds the scar with margin, and the positive prompts are inside the initial scar
    aoi = grid.mask(site.polygon)
    assert not (after & ~aoi).any()
    first = synthetic.truth_mask(site, grid, site.prompts[0].date, scenario="creep-failure")
    for p in site.prompts:
        col, row = grid.lonlat_to_pixel(p.lon, p.lat)
        assert first[int(row), int(col)] == (p.label == 1)


def test_demo_sites_are_valid_and_straddle_the_zone_boundary() -> None:
    for name in synthetic.SCENARIOS:
        site = parse_site(synthetic.demo_site(name))
        lons = [c[0] for c in site.aoi["coordinates"][0]]
        assert min(lons) < 96.0 < max(lons) and site.resolution_m == 2
        assert {p.date for p in site.prompts} == {site.start}
        assert sum(p.label == 0 for p in site.prompts) == (3 if name == "outcrops-river" else 1)
    with pytest.raises(KeyError, match="known"):
        synthetic.demo_site("no-such-scenario")


def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    site = synthetic.demo_site("outcrops-river")
    runs = [
        synthetic.generate_catalog(
            tmp_path / name, site, scenario="outcrops-river", start="2022-07-01", end="2022-07-01", seed=seed
        )
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    docs = [json.loads(p.read_text().replace(str(p.parent), "ROOT")) for p in runs]
    assert docs[0] == docs[1] and docs[0]["features"]
    for ia, ib, ic in zip(*(d["features"] for d in docs), strict=True):
        for key in ("B04", "B08", "SCL"):
            a, b, c = (
                _pixels(it["assets"][key]["href"].replace("ROOT", str(p.parent)))
                for it, p in zip((ia, ib, ic), runs, strict=True)
            )
            assert np.array_equal(a, b)
            if key != "SCL":
                assert a.shape != c.shape or not np.array_equal(a, c)


def _pixels(href: str) -> np.ndarray:
    with rasterio.open(href) as ds:
        return ds.read(1)


def test_two_year_generation_time(tmp_path: Path) -> None:
    """Timing of the demo-sized catalog (printed, not asserted: machines differ)."""
    site = synthetic.demo_site("creep-failure")
    t0 = time.perf_counter()
    path = synthetic.generate_catalog(tmp_path, site, scenario="creep-failure", start="2021-06-01", end="2023-06-01")
    seconds = time.perf_counter() - t0
    n = len(json.loads(path.read_text())["features"])
    size = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    print(f"\nsynthetic 2-year catalog: {n} items in {seconds:.1f} s, {size / 2**20:.0f} MiB")
    assert n > 250


# --- What SCL misses and what is seasonally bare (opt-in scenarios) --------------------------------------------------


def _world(scenario: str) -> tuple[synthetic._World, synthetic._Tile]:
    world = synthetic._World(parse_site(synthetic.demo_site(scenario)), synthetic.get_scenario(scenario), 0)
    return world, synthetic._tiles(world)[0]


def _sky(world: synthetic._World, *, cloud: float = 0.0, snow: float = 0.0, part: bool = False) -> synthetic._Weather:
    rng = np.random.default_rng(5)
    alpha = synthetic._opacity(world, rng, cloud, ((6.0, 1.0), (1.5, 0.35)), 0.6) if cloud else None
    missed = None
    if part and alpha is not None:
        alpha, missed = synthetic._missed_part(world, alpha, rng)
    return synthetic._Weather("partly" if cloud else "clear", cloud, alpha, None, snow, False, None, missed)


def _rendered_ndvi(
    world: synthetic._World, tile: synthetic._Tile, d: date, wx: synthetic._Weather
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(NDVI, red reflectance, SCL upsampled to 10 m) of one tile, straight from the renderer (no offset)."""
    red, nir, scl = synthetic._render(world, tile, d, wx, world.scar(d), False, np.random.default_rng(1))
    r, n = red.astype(np.float32) * 1e-4, nir.astype(np.float32) * 1e-4
    return ndvi(r, n), r, np.kron(scl, np.ones((2, 2), np.uint8))[: red.shape[0], : red.shape[1]]


def test_scl_misses_thin_cloud_edges_and_a_cloud_part_only_where_the_scenario_says() -> None:
    world, tile = _world("cloud-edges")
    d = date(2021, 12, 3)
    nd, red, scl = _rendered_ndvi(world, tile, d, _sky(world, cloud=0.1, part=True))
    cloud = tile.at_wx(_sky(world, cloud=0.1, part=True).alpha)
    unflagged = (cloud > 0) & ~np.isin(scl, (8, 9, 10)) & (scl > 0)
    low = unflagged & (nd < 0.12) & (tile.scar_fraction(world.scar(d)) == 0)  # cloud over vegetation
    assert unflagged.sum() > 200 and low.sum() > 20  # SCL calls some cloud clear ground, some as low as bare soil...
    assert np.median(red[low]) > 0.25  # ...but far brighter than soil (red ~0.17)
    plain, _ = _world("creep-failure")
    _, _, scl0 = _rendered_ndvi(plain, synthetic._tiles(plain)[0], d, _sky(plain, cloud=0.1))
    cloud0 = synthetic._tiles(plain)[0].at_wx(_sky(plain, cloud=0.1).alpha)
    assert np.isin(scl0[(cloud0 > 0) & (scl0 > 0)], (8, 9, 10)).all()  # the default flags every cloudy pixel


def test_partial_snow_fringe_is_unflagged_and_depresses_ndvi() -> None:
    world, tile = _world("snow-fringe")
    d = date(2022, 1, 12)
    nd, red, scl = _rendered_ndvi(world, tile, d, _sky(world, snow=0.3))
    cover = np.clip((tile.elev - synthetic._snow_threshold(world, 0.3)) / 0.15, 0, 1)
    fringe = (cover > 0.3) & (cover <= 0.55) & (scl > 0)
    assert fringe.sum() > 500 and (scl[fringe] == 11).mean() < 0.2  # (20 m SCL flags a block with any cover > 0.6)
    assert np.nanmedian(nd[fringe]) < 0.15 and np.median(red[fringe]) > 0.25
    assert (scl[(cover > 0.7) & (scl > 0)] == 11).all()
    record = world.unflagged(_sky(world, snow=0.3))
    assert record[0] == 0.0 and 0.02 < record[1] < 0.3


def test_bare_rim_greens_up_in_summer_and_deciduous_forest_drops_its_leaves() -> None:
    world, tile = _world("bare-rim")
    scar = world.scar(date(2021, 8, 15))
    f_scar = tile.scar_fraction(scar)
    f_rim = tile.scar_fraction(scar.buffer(world.scn.rim_m)) - f_scar
    rim, dec = f_rim > 0.99, (tile.f_dec if tile.f_dec is not None else f_rim * 0) > 0.99
    veg = (f_rim == 0) & (f_scar == 0) & ~dec & (tile.f_out == 0) & (tile.f_tshadow == 0) & tile.valid10
    assert rim.sum() > 100 and dec.sum() > 100
    for d, rim_ndvi, dec_ndvi in (
        (date(2021, 8, 15), (0.38, 0.55), (0.75, 0.9)),
        (date(2022, 1, 15), (0.05, 0.14), (0.08, 0.2)),
    ):
        nd, _, _ = _rendered_ndvi(world, tile, d, _sky(world))
        assert rim_ndvi[0] < np.median(nd[rim]) < rim_ndvi[1], d
        assert dec_ndvi[0] < np.median(nd[dec]) < dec_ndvi[1], d
        assert np.median(nd[veg]) > 0.3  # ordinary vegetation stays green enough
    truth = synthetic.truth_mask(
        parse_site(synthetic.demo_site("bare-rim")),
        site_grid(parse_site(synthetic.demo_site("bare-rim")).polygon, 10.0),
        "2022-01-15",
        scenario="bare-rim",
    )
    assert truth.sum() * 100 == pytest.approx(scar.area, rel=0.05)  # the rim is not part of the truth
