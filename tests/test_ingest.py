"""Ingestion end to end on the synthetic catalog: static JSON and a real STAC API, local folder and S3."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from scarmon import defaults
from scarmon.demo.synthetic import demo_site, generate_catalog, truth_mask
from scarmon.grid import site_grid
from scarmon.ingest.discovery import CatalogError, open_catalog
from scarmon.ingest.frames import decode_ndvi
from scarmon.ingest.pipeline import deep_rescan_due, identify, ingest, plan
from scarmon.ingest.reader import RasterioReader
from scarmon.ingest.scenes import Scene
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.store.sequence import FrameEntry, Manifest, Rejection, load_manifest, mark_tracked

START, END = "2021-12-01", "2022-03-10"  # straddles the 2022-01-25 baseline change


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    site = parse_site(demo_site("creep-failure"))
    items_path = generate_catalog(
        tmp_path_factory.mktemp("catalog"), site, scenario="creep-failure", start=START, end=END
    )
    return site, items_path


def items_of(items_path: Path) -> list[dict]:
    return json.loads(items_path.read_text())["features"]


def test_ingest_static_catalog_local_store(demo, tmp_path):
    site, items_path = demo
    store = open_store(str(tmp_path / "store"))
    reader = RasterioReader()
    report = ingest(site, open_catalog(str(items_path)), store, reader=reader)
    manifest, _ = load_manifest(store, site.id)
    assert report.found == len(report.appended) + len(report.rejected) + len(report.pending) > 10
    assert len(report.appended) >= 4 and len(report.rejected) >= 3
    # The newest scene lacks one of its two tiles (coverage < min_coverage): pending, not final.
    assert [why for _, why in report.pending] and all("coverage" in why for _, why in report.pending)
    assert {r.scene_id for r in manifest.pending()} == {sid for sid, _ in report.pending}
    assert {f.scene_id for f in manifest.frames} == set(report.appended)
    assert all(r.reason and r.clear_fraction is not None for r in manifest.rejections if "coverage" not in r.reason)
    assert [f.datetime for f in manifest.frames] == sorted(f.datetime for f in manifest.frames)
    # Rejected scenes read SCL only, never B04/B08.
    rejected = {sid for sid, _ in report.rejected}
    by_scene = {it["id"]: it for it in items_of(items_path)}
    for href in reader.stats.by_href:
        item = next(i for i in by_scene.values() if any(a["href"] == href for a in i["assets"].values()))
        if any(r in item["id"] for r in (sid.split("_")[1] for sid in rejected)):
            assert not href.endswith(("B04.tif", "B08.tif")), href
    # Running again stores nothing new and reads nothing.
    before = store.get(f"{site.id}/manifest.json")
    again_reader = RasterioReader()
    again = ingest(site, open_catalog(str(items_path)), store, reader=again_reader, deep=False)
    assert again.appended == [] and again_reader.stats.bytes_read == 0  # the pending scene's items did not change
    assert again.already_present + len(again.pending) == again.found > 0
    assert again.found < report.found  # searched from the cursor back LATE_PUBLICATION_DAYS, not from the start
    assert store.get(f"{site.id}/manifest.json") == before


def test_frames_put_the_true_scar_in_place_across_baseline_change(demo, tmp_path):
    """Grid, mosaic of two UTM zones, harmonization and bilinear resampling together: on every frame the low-NDVI
    region lies where the synthetic truth puts the scar, and the ground around it keeps its NDVI across the
    2022-01-25 baseline change (a missed -1000 DN offset would drop it by ~0.2)."""
    site, items_path = demo
    store = open_store(str(tmp_path / "store"))
    ingest(site, open_catalog(str(items_path)), store)
    manifest, _ = load_manifest(store, site.id)
    grid = site_grid(site.polygon, site.resolution_m)
    background = {}
    for frame in manifest.frames:
        ndvi = decode_ndvi(store.get(frame.objects["ndvi"]))
        assert ndvi.shape == grid.shape
        truth = truth_mask(site, grid, dt.date.fromisoformat(frame.date), scenario="creep-failure")
        near = ndimage.binary_dilation(truth, iterations=40)  # winter vegetation elsewhere dips low too
        valid = np.isfinite(ndvi) & near
        scar_med, bg_med = np.median(ndvi[truth & valid]), np.median(ndvi[~truth & valid])
        low = ndvi <= (scar_med + bg_med) / 2
        iou = (low & truth & valid).sum() / ((low | truth) & valid).sum()
        assert iou > 0.9, (frame.date, iou)
        background[frame.date] = (bg_med, frame.processing_baseline)
    before = [v for d, (v, b) in background.items() if "2022-01-01" <= d < "2022-01-25"]
    after = [v for d, (v, b) in background.items() if "2022-01-25" <= d < "2022-02-20"]
    assert before and after and abs(np.mean(before) - np.mean(after)) < 0.02
    assert len({b for _, b in background.values()}) >= 2  # frames on both sides of the baseline change


def test_late_scene_is_inserted_and_marks_tracking_dirty(demo, tmp_path):
    site, items_path = demo
    items = items_of(items_path)
    store = open_store(str(tmp_path / "store"))
    full = ingest(site, open_catalog(str(items_path)), store, end=dt.date(2022, 3, 10))
    late = full.appended[-2]  # published late, within LATE_PUBLICATION_DAYS of the newest scene
    manifest, _ = load_manifest(store, site.id)
    # Rebuild the store without the late scene, mark everything tracked, then let the scene arrive.
    store2 = open_store(str(tmp_path / "store2"))
    day = late.split("_")[1]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"type": "FeatureCollection", "features": [i for i in items if day not in i["id"]]}))
    ingest(site, open_catalog(str(partial)), store2)
    m2, _ = load_manifest(store2, site.id)
    mark_tracked(store2, site.id, tracked_until=m2.frames[-1].datetime, clear_dirty=True)
    report = ingest(site, open_catalog(str(items_path)), store2)
    assert report.appended == [late]
    m3, _ = load_manifest(store2, site.id)
    assert [f.scene_id for f in m3.frames] == [f.scene_id for f in manifest.frames]
    assert m3.dirty_from == manifest.frame(late).datetime == report.dirty_from


def test_bad_items_are_rejected_or_skipped_without_losing_data(demo, tmp_path):
    site, items_path = demo
    items = items_of(items_path)
    store = open_store(str(tmp_path / "store"))
    first = ingest(site, open_catalog(str(items_path)), store, end=dt.date(2021, 12, 31))
    before = store.get(f"{site.id}/manifest.json")
    clean = ingest(site, open_catalog(str(items_path)), open_store(str(tmp_path / "clean")))
    no_b08, corrupt = [sid.split("_")[1] for sid in clean.appended if sid.split("_")[1] >= "20220101"][:2]
    later = [i for i in items if i["properties"]["datetime"] >= "2022-01-01"]
    broken_dir = tmp_path / "broken"
    for item in later:
        if no_b08 in item["id"]:
            item["assets"].pop("B08")
        if corrupt in item["id"]:
            src = Path(item["assets"]["SCL"]["href"])
            dst = broken_dir / item["id"] / "SCL.tif"
            dst.parent.mkdir(parents=True)
            dst.write_bytes(src.read_bytes()[:400])  # truncated COG: header only
            item["assets"]["SCL"]["href"] = str(dst)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    report = ingest(site, open_catalog(str(bad)), store)
    reasons = dict(report.rejected)
    assert any(no_b08 in sid and "has no B08 asset" in why for sid, why in reasons.items())
    assert any(corrupt in sid and "SCL.tif" in why for sid, why in report.skipped)
    manifest, _ = load_manifest(store, site.id)
    assert set(first.appended) <= {f.scene_id for f in manifest.frames}
    assert before != store.get(f"{site.id}/manifest.json")
    # The unreadable scene is pending, not final: a later run reaches back to it and picks it up once repaired.
    assert not any(corrupt in sid for sid in manifest.known_scene_ids())
    unreadable = [r.scene_id for r in manifest.pending() if r.reason.startswith("unreadable")]
    assert unreadable == [sid for sid, _ in report.skipped] and manifest.pending()[0].attempts == 1
    assert ingest(site, open_catalog(str(bad)), store).skipped  # still broken: retried, still pending
    fixed = ingest(site, open_catalog(str(items_path)), store)
    assert any(corrupt in sid for sid in fixed.appended)
    assert all("coverage" in r.reason for r in load_manifest(store, site.id)[0].pending())  # only the last pass


def test_unreachable_catalog_is_a_clear_error(demo, tmp_path, monkeypatch):
    site, _ = demo
    monkeypatch.setattr(defaults, "HTTP_RETRIES", 1)
    monkeypatch.setattr(defaults, "HTTP_BACKOFF_S", 0.01)
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(CatalogError, match=r"http://127\.0\.0\.1:9/stac"):
        ingest(site, open_catalog("http://127.0.0.1:9/stac"), store)
    with pytest.raises(CatalogError, match="missing.json"):
        ingest(site, open_catalog(str(tmp_path / "missing.json")), store)
    assert store.list() == []


# --- Real catalogs' states: Earth Search items, late and partial publication ----------------------------------------


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """The demo catalog ingested once from Planetary Computer-style items: (store, report)."""
    site, items_path = demo
    store = open_store(str(tmp_path_factory.mktemp("reference") / "store"))
    return store, ingest(site, open_catalog(str(items_path)), store, deep=False)


def earth_search(item: dict, *, orbit: bool = True) -> dict:
    """The same item as Earth Search sentinel-2-c1-l2a lists it (shape of the real c1 items): id from tile and tile
    sensing time, tile datetime a few seconds after the datatake start, no sat:relative_orbit (the orbit is only in
    s2:product_uri / s2:datatake_id), mgrs:* tile properties, lower-case platform, red/nir/scl assets with
    raster:bands. `orbit=False` drops product_uri and datatake_id: what scarmon read before it looked there."""
    es = json.loads(json.dumps(item))
    p = es["properties"]
    tile = p.pop("s2:mgrs_tile")
    p.pop("sat:relative_orbit")
    when = dt.datetime.fromisoformat(p["datetime"].replace("Z", "+00:00")) + dt.timedelta(seconds=13.9)
    es["id"] = f"S2{p['platform'][-1].upper()}_T{tile}_{when:%Y%m%dT%H%M%S}_L2A"
    es["collection"] = "sentinel-2-c1-l2a"
    p.update(
        {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": p["platform"].lower(),
            "mgrs:utm_zone": int(tile[:2]),
            "mgrs:latitude_band": tile[2],
            "mgrs:grid_square": tile[3:],
            "updated": p["s2:generation_time"],
        }
    )
    if not orbit:
        del p["s2:product_uri"], p["s2:datatake_id"]
    offset = -0.1 if p["s2:processing_baseline"] >= "04.00" else 0.0  # what the synthetic DN carry
    es["assets"] = {
        new: {**es["assets"][old], "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": offset}]}
        for old, new in (("B04", "red"), ("B08", "nir"), ("SCL", "scl"))
    }
    return es


def write_items(path: Path, items: list) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def test_earth_search_ids_and_radiometry_match_planetary_computer(demo, reference, tmp_path):
    site, items_path = demo
    ref_store, ref = reference
    es = [earth_search(i) for i in items_of(items_path)]
    assert es[0]["id"].startswith("S2") and "_T" in es[0]["id"] and "sat:relative_orbit" not in es[0]["properties"]
    store = open_store(str(tmp_path / "store"))
    report = ingest(site, open_catalog(str(write_items(tmp_path / "es.json", es))), store, deep=False)
    assert report.appended == ref.appended and report.rejected == ref.rejected
    manifest, _ = load_manifest(store, site.id)
    ref_manifest, _ = load_manifest(ref_store, site.id)
    for f, g in zip(manifest.frames, ref_manifest.frames, strict=True):
        a, b = decode_ndvi(store.get(f.objects["ndvi"])), decode_ndvi(ref_store.get(g.objects["ndvi"]))
        assert np.array_equal(a, b, equal_nan=True), f.scene_id  # raster:bands offsets == baseline rule


def test_catalog_switch_appends_nothing_even_on_stores_with_orbitless_ids(demo, reference, tmp_path):
    """A store written from Earth Search before the orbit was read (ids like S2A_20220117), then fed from Planetary
    Computer (S2A_20220117_R033) and from Earth Search with the orbit: no date is appended twice."""
    site, items_path = demo
    _, ref = reference
    store = open_store(str(tmp_path / "store"))
    old = ingest(
        site,
        open_catalog(
            str(write_items(tmp_path / "old.json", [earth_search(i, orbit=False) for i in items_of(items_path)]))
        ),
        store,
        deep=False,
    )
    assert old.appended and all(len(sid.split("_")) == 2 for sid in old.appended)  # orbit-less, as written before
    before = load_manifest(store, site.id)[0]
    for catalog in (
        str(items_path),
        str(write_items(tmp_path / "es.json", [earth_search(i) for i in items_of(items_path)])),
    ):
        again = ingest(site, open_catalog(catalog), store, deep=False)
        assert again.appended == [] and again.rejected == []
        after = load_manifest(store, site.id)[0]
        assert [f.scene_id for f in after.frames] == [f.scene_id for f in before.frames]
        assert {r.scene_id for r in after.rejections} == {r.scene_id for r in before.rejections}


def test_temporary_catalog_states_are_retried(demo, reference, tmp_path):
    """Assets published after the item, and a pass's second tile published after the first: pending, then picked
    up; an unchanged pending pass is not re-read; a malformed item is skipped with its reason."""
    site, items_path = demo
    _, ref = reference
    items = items_of(items_path)
    no_b08_day, one_tile_day = (sid.split("_")[1] for sid in ref.appended[-2:])
    early = []
    for item in json.loads(json.dumps(items)):
        if no_b08_day in item["id"]:
            item["assets"].pop("B08")
        if one_tile_day in item["id"] and item["properties"]["s2:mgrs_tile"] == items[0]["properties"]["s2:mgrs_tile"]:
            continue
        early.append(item)
    garbage = {**items[0], "id": "garbage", "properties": {**items[0]["properties"], "datetime": "not a date"}}
    store = open_store(str(tmp_path / "store"))
    first = ingest(site, open_catalog(str(write_items(tmp_path / "early.json", [*early, garbage]))), store, deep=False)
    pending = dict(first.pending)
    assert any(no_b08_day in sid and "has no B08 asset" in why for sid, why in pending.items())
    assert any(one_tile_day in sid and "coverage" in why for sid, why in pending.items())
    assert (
        "garbage",
        "malformed catalog item: item garbage: datetime 'not a date' is not an ISO 8601 datetime",
    ) in first.skipped
    manifest, _ = load_manifest(store, site.id)
    one_tile = next(r for r in manifest.pending() if one_tile_day in r.scene_id)
    assert one_tile.item_ids and one_tile.retry
    # Same catalog again: the incomplete pass is not read again, nothing changes.
    reader = RasterioReader()
    again = ingest(site, open_catalog(str(tmp_path / "early.json")), store, reader=reader, deep=False)
    assert again.appended == [] and not any(one_tile_day in href for href in reader.stats.by_href)
    # Published: both scenes become frames, identical to a run that saw them complete from the start.
    done = ingest(site, open_catalog(str(items_path)), store, deep=False)
    assert {sid for sid in done.appended} == {sid for sid in ref.appended if no_b08_day in sid or one_tile_day in sid}
    assert not any(
        no_b08_day in r.scene_id or one_tile_day in r.scene_id for r in load_manifest(store, site.id)[0].pending()
    )


def test_pending_scenes_become_final_when_too_old(demo, reference, tmp_path, monkeypatch):
    site, items_path = demo
    _, ref = reference
    day = ref.appended[-2].split("_")[1]  # a pass before the newest scene
    items = items_of(items_path)
    tile = items[0]["properties"]["s2:mgrs_tile"]
    partial = [i for i in items if not (day in i["id"] and i["properties"]["s2:mgrs_tile"] == tile)]
    store = open_store(str(tmp_path / "store"))
    catalog = open_catalog(str(write_items(tmp_path / "p.json", partial)))
    assert any(day in sid for sid, _ in ingest(site, catalog, store, deep=False).pending)
    monkeypatch.setattr(defaults, "RETRY_PENDING_DAYS", 0)  # the newest scene is now "too far" ahead of it
    later = ingest(site, catalog, store, deep=False)
    assert any(day in sid and "final" in why for sid, why in later.rejected)
    manifest, _ = load_manifest(store, site.id)
    assert not any(day in r.scene_id for r in manifest.pending())
    assert any(day in sid for sid in manifest.known_scene_ids())


def test_deep_rescan_finds_scenes_published_long_after_acquisition(demo, reference, tmp_path):
    site, items_path = demo
    ref_store, ref = reference
    items = items_of(items_path)
    late_day = ref.appended[0].split("_")[1]  # the first frame: months before the newest scene
    store = open_store(str(tmp_path / "store"))
    ingest(
        site,
        open_catalog(str(write_items(tmp_path / "p.json", [i for i in items if late_day not in i["id"]]))),
        store,
        deep=False,
    )
    m, _ = load_manifest(store, site.id)
    mark_tracked(store, site.id, tracked_until=m.frames[-1].datetime, clear_dirty=True)
    normal = ingest(site, open_catalog(str(items_path)), store, deep=False)
    assert normal.appended == []  # beyond LATE_PUBLICATION_DAYS before the cursor: not searched
    deep = ingest(site, open_catalog(str(items_path)), store, deep=True)
    assert deep.deep and deep.appended == [ref.appended[0]]
    assert load_manifest(store, site.id)[0].dirty_from == load_manifest(ref_store, site.id)[0].frames[0].datetime


def test_plan_reads_only_what_may_change():
    def scene(day, items, baseline="05.09"):
        its = tuple({"id": i, "properties": {"s2:processing_baseline": baseline}} for i in items)
        return Scene(f"S2A_2024010{day}_R033", f"2024-01-0{day}T04:17:01Z", its)

    def rej(day, items=(), retry=True):
        return Rejection(
            date=f"2024-01-0{day}",
            scene_id=f"S2A_2024010{day}_R033",
            datetime=f"2024-01-0{day}T04:17:01Z",
            reason="coverage 0.48 < min_coverage 0.90",
            retry=retry,
            item_ids=items,
        )

    frame = FrameEntry(
        date="2024-01-01",
        scene_id="S2A_20240101_R033",
        datetime="2024-01-01T04:17:01Z",
        item_ids=("a",),
        processing_baseline="02.12",
        coverage=1.0,
        clear_fraction=1.0,
    )
    manifest = Manifest(
        site_id="s",
        grid=None,
        frames=(frame,),
        rejections=(rej(2, ("b",)), rej(3, ("c",)), rej(4), rej(5, retry=False)),
    )
    todo = plan(
        [scene(1, ["a2"]), scene(2, ["b"]), scene(3, ["c", "c2"]), scene(4, ["d"]), scene(5, ["e"]), scene(6, ["f"])],
        manifest,
    )
    assert [s.id[4:12] for s in todo.read] == ["20240103", "20240104", "20240106"]  # items changed, unread, new
    assert [s.id[4:12] for s, _ in todo.unchanged] == ["20240102"] and todo.known == 2
    assert [(s.id, f.scene_id) for s, f in todo.reprocessed] == [("S2A_20240101_R033",) * 2]  # 02.12 → 05.09


def test_identify_maps_each_stored_id_once():
    def scene(sid):
        return Scene(sid, f"{sid[4:8]}-{sid[8:10]}-{sid[10:12]}T04:17:01Z", ({"id": sid, "properties": {}},))

    old = Rejection(date="2024-01-01", scene_id="S2A_20240101", datetime="2024-01-01T04:17:01Z", reason="cloudy")
    manifest = Manifest(site_id="s", grid=None, rejections=(old,))
    got = identify([scene("S2A_20240101_R033"), scene("S2A_20240101_R034"), scene("S2A_20240106_R033")], manifest)
    assert [s.id for s in got] == ["S2A_20240101", "S2A_20240101_R034", "S2A_20240106_R033"]


def test_deep_rescan_is_due_once_per_period_per_site():
    period = defaults.DEEP_RESCAN_DAYS
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=k) for k in range(3 * period)]
    for site_id in ("baige", "sela", "xinmo"):
        due = [d for d in days if deep_rescan_due(site_id, d)]
        assert len(due) == 3 and all((b - a).days == period for a, b in zip(due, due[1:], strict=False))
    assert len({next(d for d in days if deep_rescan_due(s, d)) for s in ("baige", "sela", "xinmo", "a", "b")}) > 1


def test_concurrent_ingest_stores_what_sequential_ingest_stores(demo, reference, tmp_path):
    site, items_path = demo
    ref_store, ref = reference  # default concurrency
    store = open_store(str(tmp_path / "store"))
    one = ingest(site, open_catalog(str(items_path)), store, concurrency=1, deep=False)
    assert one.appended == ref.appended and one.rejected == ref.rejected and one.pending == ref.pending
    for f in load_manifest(store, site.id)[0].frames:
        assert store.get(f.objects["ndvi"]) == ref_store.get(f.objects["ndvi"])
        assert store.get(f.objects["video"]) == ref_store.get(f.objects["video"])
    ours, theirs = load_manifest(store, site.id)[0], load_manifest(ref_store, site.id)[0]
    assert ours.frames == theirs.frames and ours.rejections == theirs.rejections  # revisions differ: batched appends


# --- A real STAC API (pgstac) and a real S3 API (moto) ------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded_api(demo, stac_api):
    """The synthetic items in the session's pgstac, in a collection of this module's own."""
    _, items_path = demo
    collection = json.loads((items_path.parent / "collection.json").read_text())
    collection["id"] = "s2-ingest-test"
    stac_api.load_collection(collection)
    items = items_of(items_path)
    for item in items:
        item["collection"] = "s2-ingest-test"
    stac_api.load_items(items)
    return stac_api.url, "s2-ingest-test"


def test_stac_api_to_s3_matches_static_to_local(demo, loaded_api, s3_uri, tmp_path):
    site, items_path = demo
    url, collection = loaded_api
    s3 = open_store(s3_uri)
    via_api = ingest(site, open_catalog(url, collection=collection), s3)
    local = open_store(str(tmp_path / "store"))
    via_json = ingest(site, open_catalog(str(items_path)), local)
    assert via_api.appended == via_json.appended and via_api.rejected == via_json.rejected
    m_s3, _ = load_manifest(s3, site.id)
    first = m_s3.frames[0].objects["ndvi"]
    assert np.array_equal(decode_ndvi(s3.get(first)), decode_ndvi(local.get(first)), equal_nan=True)
    assert ingest(site, open_catalog(url, collection=collection), s3).appended == []


class _FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the STAC API but answers 503 to the second search page `fail` times."""

    def __init__(self, upstream: str, fail: int):
        self.upstream, self.fail, self.searches = upstream, fail, 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self._forward(None)

    def do_POST(self):
        self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _forward(self, body):
        srv: _FlakyProxy = self.server  # type: ignore[assignment]
        if self.path.startswith("/search"):
            srv.searches += 1
            if srv.searches >= 2 and srv.fail > 0:
                srv.fail -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        req = urllib.request.Request(
            srv.upstream + self.path,
            data=body,
            method=self.command,
            headers={
                "Content-Type": self.headers.get("Content-Type", "application/json"),
                "Host": self.headers["Host"],
            },
        )
        with urllib.request.urlopen(req) as resp:
            payload = resp.read()
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)


@pytest.mark.parametrize("fail, ok", [(2, True), (50, False)])
def test_5xx_in_the_middle_of_paging(demo, loaded_api, tmp_path, monkeypatch, fail, ok):
    site, _ = demo
    url, collection = loaded_api
    monkeypatch.setattr(defaults, "PAGE_SIZE", 3)  # several pages
    monkeypatch.setattr(defaults, "HTTP_BACKOFF_S", 0.01)
    proxy = _FlakyProxy(url, fail)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        store = open_store(str(tmp_path / "store"))
        catalog = open_catalog(f"http://127.0.0.1:{proxy.server_address[1]}", collection=collection)
        if ok:
            report = ingest(site, catalog, store)
            assert len(report.appended) >= 4 and proxy.searches >= 4
        else:
            with pytest.raises(CatalogError, match="failed after 1 page"):
                ingest(site, catalog, store)
            assert store.list() == []
    finally:
        proxy.shutdown()
