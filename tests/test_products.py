"""Products for GIS and dashboards: polygons, quicklooks, plots, the products index; incremental; crash-safe."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarmon.products.publish import (
    ProductsError,
    current_alert_level,
    load_index,
    mask_to_pixel_polygon,
    publish_site,
    read_alerts,
)
from scarmon.store import keys
from scarmon.store.backends import LocalStore, Store, open_store
from scarmon.tracking.pipeline import track_site
from tests.test_products_support import (  # noqa: F401 (fixtures)
    N_FRAMES,
    append_frames,
    build_site,
    copy_store,
    frame_dates,
    make_site,
    published_store_dir,
    tracked_store_dir,
)

SITE = "test-slide"


class CountingStore:
    """Wraps a store: counts puts per key prefix and can fail the Nth put (a crash half-way through a run)."""

    def __init__(self, inner: Store, fail_at: int | None = None) -> None:
        self.inner, self.fail_at, self.puts = inner, fail_at, []
        self.uri = inner.uri

    def _count(self, key: str) -> None:
        if self.fail_at is not None and len(self.puts) + 1 >= self.fail_at:
            raise OSError(f"injected failure writing {key}")
        self.puts.append(key)

    def put(self, key, data, *, content_type=None):
        self._count(key)
        return self.inner.put(key, data, content_type=content_type)

    def put_if(self, key, data, *, expected_tag, content_type=None):
        self._count(key)
        return self.inner.put_if(key, data, expected_tag=expected_tag, content_type=content_type)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _index(store: Store) -> dict:
    return json.loads(store.get(keys.products_index(SITE)))


def test_publish_writes_every_product(published_store_dir: Path) -> None:
    import geopandas as gpd

    store = LocalStore(published_store_dir)
    index = _index(store)
    assert index["format"] == "scarmon.products/1" and index["revision"] == 1
    assert len(index["frames"]) == N_FRAMES
    assert index["alert_level"] == "warning" and len(index["alerts"]) == 2
    series = json.loads(store.get(f"{SITE}/series.json"))
    for f, row in zip(index["frames"], series, strict=True):
        assert f["date"] == row["date"] and f["area_m2"] == row["area_m2"]
        for rel in (f["mask"], f["quicklook"], f["polygon"]):
            assert store.exists(f"{SITE}/{rel}"), rel
        assert f["boundary_px"] and len(f["boundary_px"][0]) > 8

    # GeoJSON: one feature per frame, lon/lat, date, area, confidence
    gj = json.loads(store.get(f"{SITE}/products/polygons.geojson"))
    assert len(gj["features"]) == N_FRAMES
    props = gj["features"][0]["properties"]
    assert {"date", "area_m2", "confidence", "scene_id", "clear_fraction"} <= set(props)
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0][:2]
    assert 95.99 < lon < 96.01 and 31.09 < lat < 31.11
    assert {f["properties"]["confidence"] for f in gj["features"]} == {"low", "normal"}

    # GeoParquet in the grid's UTM CRS: polygon areas are exactly the measured areas (pixel-edge polygons)
    gdf = gpd.read_parquet(io.BytesIO(store.get(f"{SITE}/products/polygons.parquet")))
    assert gdf.crs.to_epsg() == index["grid"]["epsg"]
    assert np.allclose(gdf.geometry.area.values, [r["area_m2"] for r in series])

    # per-frame GeoJSON
    one = json.loads(store.get(f"{SITE}/{index['frames'][5]['polygon']}"))
    assert one["features"][0]["properties"]["date"] == index["frames"][5]["date"]

    # quicklook: the grid's size, NDVI colours and a red boundary
    img = np.asarray(Image.open(io.BytesIO(store.get(f"{SITE}/{index['frames'][-1]['quicklook']}"))).convert("RGB"))
    assert img.shape[:2] == (index["grid"]["height"], index["grid"]["width"])
    red = (img[..., 0] == 220) & (img[..., 1] == 0) & (img[..., 2] == 0)
    assert 50 < red.sum() < 0.2 * red.size

    # plots
    for name, rel in index["plots"].items():
        png = Image.open(io.BytesIO(store.get(f"{SITE}/{rel}")))
        assert png.format == "PNG" and png.width > 600, name
    assert set(index["plots"]) == {"area_series", "seasonal_panels", "same_season_boundaries"}

    # the store-wide site list and the dashboard
    sites = json.loads(store.get("sites.json"))["sites"]
    assert sites == [{**sites[0], "id": SITE, "alert_level": "warning", "frames": N_FRAMES, "status": "ok"}]
    assert store.exists("dashboard/index.html") and store.exists("dashboard/app.js")


def test_second_run_writes_nothing_and_a_new_frame_touches_only_what_changed(
    tracked_store_dir: Path, tmp_path: Path
) -> None:
    inner = copy_store(tracked_store_dir, tmp_path / "store")
    site = make_site()
    publish_site(site, inner)
    again = CountingStore(inner)
    report = publish_site(site, again)
    assert again.puts == [] and not report.index_changed and report.objects_written == 0

    # one more frame: its quicklook, polygon and STAC item are new; no old quicklook is redrawn
    append_frames(inner, site, frame_dates(N_FRAMES + 1)[-1:], first_index=N_FRAMES)
    track_site(site, inner)
    counting = CountingStore(inner)
    report = publish_site(site, counting)
    quicklooks = [k for k in counting.puts if "/quicklooks/" in k]
    assert len(quicklooks) == 1 and quicklooks[0].endswith(
        f"{frame_dates(N_FRAMES + 1)[-1]}_S2A_{frame_dates(N_FRAMES + 1)[-1]:%Y%m%d}_R033.png"
    )
    assert report.index_changed and report.index_revision == 2
    assert report.frames_total == N_FRAMES + 1
    assert len(report.frames_updated) < 5  # the new frame (and rows whose series values changed)
    assert counting.puts[-1] == "sites.json" or keys.products_index(SITE) in counting.puts
    assert len(_index(inner)["frames"]) == N_FRAMES + 1


@pytest.mark.parametrize("fail_at", [3, 40])
def test_a_run_failing_half_way_leaves_the_previous_products_readable(
    tracked_store_dir: Path, tmp_path: Path, fail_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scarmon.products import publish as products

    inner = copy_store(tracked_store_dir, tmp_path / "store")
    site = make_site()
    publish_site(site, inner)
    before = _index(inner)
    # every product must be rebuilt (as after a change of drawing code), and the run dies part-way
    monkeypatch.setattr(products, "PRODUCTS_VERSION", "test-rebuild")
    with pytest.raises(OSError, match="injected failure"):
        publish_site(site, CountingStore(inner, fail_at=fail_at))
    after = _index(inner)
    assert after == before  # the index was not swapped
    for f in after["frames"]:  # and everything it references is still there, whole
        for rel in (f["mask"], f["quicklook"], f["polygon"]):
            data = inner.get(f"{SITE}/{rel}")
            if rel.endswith(".png"):
                Image.open(io.BytesIO(data)).load()
            elif rel.endswith(".geojson"):
                json.loads(data)
    # the next run completes the work
    report = publish_site(site, inner)
    assert report.index_changed and _index(inner)["revision"] == before["revision"] + 1


def test_empty_and_missing_sites_publish_plainly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    site = make_site()
    report = publish_site(site, store)  # no manifest at all
    index = _index(store)
    assert index["frames"] == [] and report.frames_total == 0
    entry = json.loads(store.get("sites.json"))["sites"][0]
    assert entry["status"] == "empty" and entry["frames"] == 0
    assert set(index["plots"]) and store.exists(f"{SITE}/{index['plots']['area_series']}")


def test_untracked_frames_are_not_published_yet(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    site = make_site()
    append_frames(store, site, frame_dates(3))  # ingested, not tracked
    publish_site(site, store)
    assert _index(store)["frames"] == [] and _index(store)["untracked_frames"] == 3


def test_alert_level_from_state_or_history(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert read_alerts(store, SITE) == [] and current_alert_level(store, SITE, []) == "none"
    store.put(
        f"{SITE}/alerts.jsonl",
        b'{"site": "test-slide", "date": "2022-01-01", "level": "watch", "state": "provisional"}\nnot json\n',
    )
    events = read_alerts(store, SITE)
    assert len(events) == 1 and current_alert_level(store, SITE, events) == "watch"
    store.put(f"{SITE}/alerts/state.json", b'{"status": "confirmed", "level": 3, "level_name": "alarm"}')
    assert current_alert_level(store, SITE, events) == "alarm"
    store.put(f"{SITE}/alerts/state.json", b'{"status": "none", "level": 0}')
    assert current_alert_level(store, SITE, events) == "none"


def test_pixel_polygon_is_exact() -> None:
    m = np.zeros((20, 30), bool)
    m[2:6, 3:9] = True
    m[10:12, 20:21] = True
    g = mask_to_pixel_polygon(m)
    assert g.area == m.sum() and g.bounds == (3.0, 2.0, 21.0, 12.0)
    assert mask_to_pixel_polygon(np.zeros((4, 4), bool)).is_empty


def test_publish_to_s3(s3_uri: str) -> None:
    store = open_store(s3_uri)
    site = build_site(store, n_frames=6)
    report = publish_site(site, store)
    assert report.frames_total == 6 and report.index_changed
    index, _ = load_index(store, SITE)
    assert len(index["frames"]) == 6 and store.exists(f"{SITE}/{index['frames'][0]['quicklook']}")
    assert publish_site(site, store).objects_written == 0
    assert report.dashboard_url.startswith("http://127.0.0.1:") and "/dashboard/index.html" in report.dashboard_url


def test_conflicting_publishers_retry_then_give_up(
    tracked_store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scarmon.products import publish as products
    from scarmon.store.backends import Conflict

    store = copy_store(tracked_store_dir, tmp_path / "store")
    calls = []

    def always_conflict(*a, **k):
        calls.append(1)
        raise Conflict("someone else swapped the index")

    monkeypatch.setattr(products, "_publish", always_conflict)
    with pytest.raises(ProductsError, match="another publish run"):
        publish_site(make_site(), store)
    assert len(calls) == 3


def test_cli_publish(tracked_store_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scarmon.cli import main
    from tests.test_products_support import write_site_file

    copy_store(tracked_store_dir, tmp_path / "store")
    site_file = write_site_file(tmp_path / "site.yaml")
    res = CliRunner().invoke(main, ["publish", "--site", str(site_file), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert f"published {N_FRAMES} new/changed frame(s)" in res.output
    assert f"STAC catalog valid (STAC 1.1.0, offline): {N_FRAMES + 2} document(s)" in res.output
    assert "http://127.0.0.1:8000/dashboard/index.html#site=test-slide" in res.output


def test_gis_products_read_fully(published_store_dir: Path) -> None:
    """Masks with nodata (not observed, outside the AOI), a colour table and tags; GeoJSON simplified by half a pixel
    with 7 decimals, areas kept; GeoParquet with typed date/timestamp columns; the map image and where the site is."""
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rasterio

    from scarmon.grid import SiteGrid
    from scarmon.ingest.frames import decode_ndvi
    from scarmon.tracking.pipeline import read_mask

    store = LocalStore(published_store_dir)
    index = _index(store)
    grid = SiteGrid.from_dict(index["grid"])
    aoi = grid.mask(make_site().polygon)
    cloudy = next(f for f in index["frames"] if f["clear_fraction"] < 1)
    with rasterio.open(published_store_dir / SITE / cloudy["mask"]) as src:
        data = src.read(1)
        assert src.nodata == 255 and src.colormap(1)[1][:3] == (220, 0, 0) and src.colormap(1)[255][3] == 0
        tags = src.tags()
        assert (tags["site"], tags["date"], tags["scene_id"]) == (SITE, cloudy["date"], cloudy["scene_id"])
        assert tags["tracker"] and "255 not observed" in tags["values"]
    ndvi = decode_ndvi(store.get(f"{SITE}/{cloudy['ndvi']}"))
    tracker = read_mask(store, f"{SITE}/{cloudy['tracker_mask']}")
    assert set(np.unique(data)) == {0, 1, 255}
    assert np.all(data[~aoi] == 255) and np.all(data[~np.isfinite(ndvi)] == 255)  # outside the AOI, under cloud
    seen = aoi & np.isfinite(ndvi)
    assert np.array_equal(data[seen] == 1, tracker[seen].astype(bool)) and seen.sum() > 0.5 * aoi.sum()

    # GeoJSON: 7 decimals at most, the pixel staircase simplified away, areas within 3 % of the measured ones
    raw = store.get(f"{SITE}/products/polygons.geojson").decode()

    def numbers(obj):
        if isinstance(obj, list):
            for v in obj:
                yield from numbers(v)
        else:
            yield obj

    coords = [c for f in json.loads(raw)["features"] for c in numbers(f["geometry"]["coordinates"])]
    assert max(len(repr(c).split(".")[1]) for c in coords) <= 7
    assert all(
        len(repr(v).split(".")[-1]) <= 4
        for f in json.loads(raw)["features"]
        for v in f["properties"].values()
        if isinstance(v, float)
    )  # no 16-digit numbers
    gj = gpd.read_file(io.BytesIO(raw.encode()))
    exact = gpd.read_parquet(io.BytesIO(store.get(f"{SITE}/products/polygons.parquet")))
    simple_area = gj.to_crs(exact.crs).geometry.area.values
    assert np.allclose(simple_area, exact.geometry.area.values, rtol=0.03)
    n_simple = sum(len(g.exterior.coords) for g in gj.geometry if g is not None and g.geom_type == "Polygon")
    n_exact = sum(len(g.exterior.coords) for g in exact.geometry if g is not None and g.geom_type == "Polygon")
    assert n_simple < 0.85 * n_exact, (n_simple, n_exact)
    # GeoParquet: real date and timestamp columns
    schema = pq.read_schema(io.BytesIO(store.get(f"{SITE}/products/polygons.parquet")))
    assert str(schema.field("date").type) == "date32[day]"
    stamp = schema.field("datetime").type  # the unit follows the pandas version (ns before 3, us from 3)
    assert pa.types.is_timestamp(stamp) and stamp.tz == "UTC", stamp

    # where the site is, for maps: the AOI, its centre and bbox, the map image's lon/lat bounds
    assert index["center"] == [96.0, 31.1] and index["aoi"]["type"] == "Polygon"
    w, s, e, n = index["map"]["bounds"]
    bw, bs, be, bn = index["bbox"]
    assert w <= bw < be <= e and s <= bs < bn <= n and (e - w) < 2 * (be - bw)
    entry = json.loads(store.get("sites.json"))["sites"][0]
    assert entry["center"] == index["center"] and entry["bbox"] == index["bbox"]
    img = Image.open(io.BytesIO(store.get(f"{SITE}/{cloudy['map_image']}")))
    assert img.mode == "P" and "transparency" in img.info and max(img.size) <= 1024
    rgba = np.asarray(img.convert("RGBA"))
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).mean() > 0.8  # transparent only off the frame


def test_recent_alert_survives_the_end_of_an_alarm() -> None:
    from scarmon.products.publish import recent_alert

    events = [
        {"date": "2023-01-01", "event": "provisional", "state": "provisional", "level": "watch"},
        {
            "date": "2023-02-01",
            "event": "confirmed",
            "state": "confirmed",
            "level": "alarm",
            "first_date": "2023-01-01",
        },
        {"date": "2023-04-01", "event": "finished", "state": "finished", "level": "alarm"},
    ]
    r = recent_alert(events, "2023-05-01")
    assert r is not None and r["level"] == "alarm" and r["state"] == "finished" and r["last_date"] == "2023-04-01"
    assert recent_alert(events, "2024-05-01") is None  # long ago
    # a provisional alert that was reset never was an alarm
    assert (
        recent_alert(
            [
                {"date": "2023-01-01", "event": "provisional", "state": "provisional", "level": "alarm"},
                {"date": "2023-01-20", "event": "reset", "state": "reset", "level": "alarm"},
            ],
            "2023-02-01",
        )
        is None
    )


def test_s3_policy_is_least_privilege(s3_uri: str) -> None:
    import fnmatch

    from scarmon.products.publish import s3_public_read_policy

    store = open_store(s3_uri)
    policy = json.loads(s3_public_read_policy(store))
    [stmt] = policy["Statement"]
    assert stmt["Action"] == "s3:GetObject" and stmt["Principal"] == "*" and stmt["Effect"] == "Allow"
    prefix = f"arn:aws:s3:::{store.bucket}/{store.prefix}"

    def public(key: str) -> bool:  # S3's '*' matches any characters, '/' included, as fnmatch's does
        return any(fnmatch.fnmatchcase(prefix + key, r) for r in stmt["Resource"])

    for key in (
        "dashboard/index.html",
        "dashboard/vendor/leaflet/leaflet.js",
        "sites.json",
        "catalog.json",
        "s/products/index.json",
        "s/products/masks/2023-01-01_S2A.tif",
        "s/stac/items/x.json",
        "s/stac/collection.json",
        "s/series.csv",
        "s/series.json",
        "s/status.json",
        "s/frames/2023-01-01_S2A.tif",
    ):
        assert public(key), key
    for key in (
        "s/manifest.json",
        "s/corrections.json",
        "s/alerts.jsonl",
        "s/alerts/state.json",
        "s/alerts/outbox/e1.json",
        "s/alerts/sent/e1.json",
        "s/lock.json",
        "s/tracking/tracker.json",
        "s/tracking/sam2/x.state",
        "s/frames/2023-01-01_S2A.png",
        "s/masks/x.tif",
        "other/secret.txt",
    ):
        assert not public(key), key
    assert s3_public_read_policy(LocalStore(Path("/tmp"))) is None
