"""A newer processing of a stored frame's acquisition (issue 12, item 5): read again, it replaces the frame's entry
(the replaced objects are kept and listed as superseded), tracking re-runs from that frame; a rejected one leaves
the frame as it is and is not read again; equal, older or unknown baselines change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from scarmon.demo.synthetic import demo_site, generate_catalog
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest, newer_processing, plan
from scarmon.ingest.reader import RasterioReader
from scarmon.ingest.scenes import Scene
from scarmon.site import parse_site
from scarmon.store import keys
from scarmon.store.backends import LocalStore, open_store
from scarmon.store.sequence import DeclinedReprocessing, FrameEntry, Manifest, load_manifest
from scarmon.tracking.pipeline import read_mask, read_series, track_site

START, END = "2021-12-01", "2022-03-10"  # frames on 02.12 before 2022-01-25, on 04.00 after
NEW = "05.11"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    site = parse_site(demo_site("creep-failure"))
    items_path = generate_catalog(
        tmp_path_factory.mktemp("catalog"), site, scenario="creep-failure", start=START, end=END
    )
    return site, json.loads(items_path.read_text())["features"]


@pytest.fixture(scope="module")
def tracked(demo, tmp_path_factory):
    """The catalog ingested and tracked once; tests copy the store."""
    site, items = demo
    root = tmp_path_factory.mktemp("tracked")
    store = open_store(str(root / "store"))
    ingest(site, open_catalog(str(write_items(root / "items.json", items))), store, deep=False)
    track_site(site, store)
    return root / "store"


def write_items(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def copy_store(src: Path, dst: Path) -> LocalStore:
    import shutil

    shutil.copytree(src, dst)
    return LocalStore(dst)


def reprocess(item: dict, out: Path, *, baseline: str = NEW, heal: bool = True, cloudy: bool = False) -> dict:
    """The item as a newer processing of the same acquisition lists it: another id and generation time, the new
    baseline, DN with the +1000 offset of baselines ≥ 04.00. `heal`: the southern half of the scar is vegetated in
    it (so the frame's mask must change); `cloudy`: SCL says cloud everywhere (screening rejects it)."""
    new = json.loads(json.dumps(item))
    tag = baseline.replace(".", "")
    new["id"] = item["id"].rsplit("_", 1)[0] + f"_20240601T0000{tag[-2:]}"
    p = new["properties"]
    old_tag = "N" + p["s2:processing_baseline"].replace(".", "")
    p.update(
        {
            "s2:processing_baseline": baseline,
            "s2:product_uri": p["s2:product_uri"].replace(f"_{old_tag}_", f"_N{tag}_"),
            "s2:generation_time": "2024-06-01T00:00:00.000000Z",
        }
    )
    folder = out / new["id"]
    folder.mkdir(parents=True)
    with rasterio.open(item["assets"]["B04"]["href"]) as src:
        red, profile = src.read(1), src.profile
    with rasterio.open(item["assets"]["B08"]["href"]) as src:
        nir = src.read(1)
    offset = 1000 if item["properties"]["s2:processing_baseline"] < "04.00" else 0
    if heal:
        valid = red > 0
        ndvi = (nir.astype(float) - red) / np.maximum(nir.astype(float) + red, 1)
        labels, _ = ndimage.label(valid & (ndvi < 0.25))
        scar = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
        rows = np.nonzero(scar.any(axis=1))[0]
        scar[: rows[len(rows) // 2]] = False
        veg = valid & (ndvi > 0.5)
        red, nir = red.copy(), nir.copy()
        red[scar], nir[scar] = np.median(red[veg]), np.median(nir[veg])
    for band, dn in (("B04", red), ("B08", nir)):
        with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
            dst.write(np.where(dn > 0, dn.astype(np.uint32) + offset, 0).astype(np.uint16), 1)
        new["assets"][band]["href"] = str(folder / f"{band}.tif")
    if cloudy:
        with rasterio.open(item["assets"]["SCL"]["href"]) as src:
            scl, profile = src.read(1), src.profile
        with rasterio.open(folder / "SCL.tif", "w", **profile) as dst:
            dst.write(np.where(scl > 0, 9, 0).astype(scl.dtype), 1)
        new["assets"]["SCL"]["href"] = str(folder / "SCL.tif")
    return new


def with_reprocessing(items: list[dict], frame: FrameEntry, out: Path, **kw) -> list[dict]:
    """The catalog plus a newer processing of `frame`'s items (the old ones stay listed, as catalogs do)."""
    return items + [reprocess(i, out, **kw) for i in items if i["id"] in frame.item_ids]


# --- pure decisions ---------------------------------------------------------------------------------------------


def test_newer_processing_compares_baselines_numerically():
    assert newer_processing("05.11", "04.00") and newer_processing("05.11", "05.09")
    assert newer_processing("5.11", "05.9")  # numbers, not text: 05.11 > 05.09
    assert newer_processing(5.11, "04.00") and newer_processing("10.00", "09.99")
    assert newer_processing("04.00,05.11", "04.00")  # one tile reprocessed
    assert newer_processing("05.11", "04.00,05.11")  # then the other
    for offered, stored in [
        ("05.11", "05.11"),
        ("5.11", "05.11"),
        ("04.00", "05.11"),
        ("04.00,05.11", "05.11"),
        (None, "04.00"),
        ("05.11", None),
        ("N/A", "04.00"),
        ("05.11", "unknown"),
        ("", "04.00"),
    ]:
        assert not newer_processing(offered, stored), (offered, stored)


def test_plan_rereads_stored_frames_only_for_a_newer_processing():
    def frame(day: int, baseline: str | None) -> FrameEntry:
        return FrameEntry(
            date=f"2024-01-0{day}",
            scene_id=f"S2A_2024010{day}_R033",
            datetime=f"2024-01-0{day}T04:17:01Z",
            item_ids=(f"old{day}",),
            processing_baseline=baseline,
            coverage=1.0,
            clear_fraction=1.0,
        )

    def scene(day: int, baseline: str | None, items: tuple[str, ...]) -> Scene:
        props = {"s2:processing_baseline": baseline} if baseline else {}
        # the newer processing's items start a few seconds later: the plan keeps the stored frame's datetime
        return Scene(
            f"S2A_2024010{day}_R033", f"2024-01-0{day}T04:17:09Z", tuple({"id": i, "properties": props} for i in items)
        )

    declined = DeclinedReprocessing(
        "S2A_20240106_R033", NEW, ("new6",), "clear fraction 0.00 < 0.70", "2024-06-01T00:00:00Z"
    )
    manifest = Manifest(
        site_id="s",
        grid=None,
        frames=tuple(
            frame(d, b)
            for d, b in [(1, "04.00"), (2, "05.11"), (3, "05.11"), (4, None), (5, "02.12"), (6, "04.00"), (7, "04.00")]
        ),
        declined_reprocessings=(declined, replace_items(declined, "S2A_20240107_R033", ("new7",))),
    )
    todo = plan(
        [
            scene(1, NEW, ("new1",)),  # newer: read again
            scene(2, NEW, ("other-catalog",)),  # same baseline, other item ids: nothing
            scene(3, "04.00", ("new3",)),  # older: nothing
            scene(4, NEW, ("new4",)),  # stored baseline unknown: nothing
            scene(5, None, ("new5",)),  # offered baseline unknown: nothing
            scene(6, NEW, ("new6",)),  # declined before with the same items: nothing
            scene(7, NEW, ("new7", "new7b")),  # declined before, items changed since: read again
        ],
        manifest,
    )
    assert todo.read == [] and todo.known == 7
    assert [(s.id, f.scene_id) for s, f in todo.reprocessed] == [
        ("S2A_20240101_R033", "S2A_20240101_R033"),
        ("S2A_20240107_R033", "S2A_20240107_R033"),
    ]
    assert all(s.datetime == f.datetime and s.date == f.date for s, f in todo.reprocessed)


def replace_items(d: DeclinedReprocessing, scene_id: str, items: tuple[str, ...]) -> DeclinedReprocessing:
    from dataclasses import replace

    return replace(d, scene_id=scene_id, item_ids=items)


# --- end to end ---------------------------------------------------------------------------------------------------


def test_newer_processing_replaces_the_frame_and_tracking_reruns_from_it(demo, tracked, tmp_path):
    site, items = demo
    store = copy_store(tracked, tmp_path / "store")
    before, _ = load_manifest(store, site.id)
    assert before.dirty_from is None and before.tracked_until == before.frames[-1].datetime
    target = next(f for f in before.frames[1:] if f.processing_baseline == "02.12")  # not the first frame
    index = [f.scene_id for f in before.frames].index(target.scene_id)
    old_objects = {k: store.get(k) for k in target.objects.values()}
    old_masks = {f.scene_id: read_mask(store, keys.mask(site.id, f)) for f in before.frames}
    old_series = {r["scene_id"]: r for r in read_series(store, site.id)}

    catalog = write_items(tmp_path / "items.json", with_reprocessing(items, target, tmp_path / "re"))
    normal = ingest(site, open_catalog(str(catalog)), store, deep=False)
    assert normal.replaced == []  # months before the cursor: only the deep re-scan reaches it
    report = ingest(site, open_catalog(str(catalog)), store, deep=True)

    # The frame's entry is replaced: same scene id, date and datetime; new items, baseline, fractions and objects.
    assert [(r.scene_id, r.old_baseline, r.new_baseline, r.retrack) for r in report.replaced] == [
        (target.scene_id, "02.12", NEW, True)
    ]
    assert report.appended == [] and report.kept == []
    assert f"replaced {target.scene_id}: processing 02.12 → {NEW}; tracking re-runs from {target.date}" in (
        report.summary()
    )
    after, _ = load_manifest(store, site.id)
    new = after.frame(target.scene_id)
    assert [f.scene_id for f in after.frames] == [f.scene_id for f in before.frames]
    assert (new.date, new.datetime) == (target.date, target.datetime)
    assert new.processing_baseline == NEW and set(new.item_ids).isdisjoint(target.item_ids)
    assert new.objects["ndvi"] == keys.frame_base(site.id, target.date, target.scene_id, NEW) + ".tif"
    assert set(new.objects.values()).isdisjoint(target.objects.values())
    assert [f for f in after.frames if f.scene_id != target.scene_id] == [
        f for f in before.frames if f.scene_id != target.scene_id
    ]
    # Nothing stored is lost: the old processing's objects are still there, unchanged, and the manifest says what
    # was replaced, when and by what.
    assert {k: store.get(k) for k in target.objects.values()} == old_objects
    assert [(s.frame, s.by_processing_baseline) for s in after.superseded] == [(target, NEW)]
    assert after.superseded[0].replaced_at[:4] >= "2024"
    assert after.dirty_from == target.datetime == report.dirty_from

    # Tracking re-runs from the replaced frame: earlier masks untouched, the replaced frame's mask and row change.
    trk = track_site(site, store)
    assert trk.start_index == index and trk.tracked == [f.scene_id for f in after.frames[index:]]
    for f in after.frames[:index]:
        assert np.array_equal(read_mask(store, keys.mask(site.id, f)), old_masks[f.scene_id])
    healed = read_mask(store, keys.mask(site.id, new))
    assert healed.sum() < 0.8 * old_masks[target.scene_id].sum()  # half the scar is vegetated in the new processing
    rows = {r["scene_id"]: r for r in read_series(store, site.id)}
    assert [rows[f.scene_id] for f in after.frames[:index]] == [old_series[f.scene_id] for f in after.frames[:index]]
    assert rows[target.scene_id]["area_m2"] < old_series[target.scene_id]["area_m2"]
    tracked_manifest, _ = load_manifest(store, site.id)
    assert tracked_manifest.dirty_from is None and tracked_manifest.frame(target.scene_id) == new

    # Idempotent: the same catalog again replaces nothing and reads nothing.
    reader = RasterioReader()
    again = ingest(site, open_catalog(str(catalog)), store, reader=reader, deep=True)
    assert again.replaced == [] and again.kept == [] and reader.stats.bytes_read == 0
    assert load_manifest(store, site.id)[0] == tracked_manifest
    assert track_site(site, store).tracked == []


def test_rejected_newer_processing_keeps_the_frame_and_is_not_read_again(demo, tracked, tmp_path):
    site, items = demo
    store = copy_store(tracked, tmp_path / "store")
    before, _ = load_manifest(store, site.id)
    target = next(f for f in before.frames if f.processing_baseline == "02.12")
    catalog = write_items(tmp_path / "cloudy.json", with_reprocessing(items, target, tmp_path / "re", cloudy=True))
    report = ingest(site, open_catalog(str(catalog)), store, deep=True)
    assert report.replaced == [] and [sid for sid, _ in report.kept] == [target.scene_id]
    assert "newer processing 05.11 rejected (clear fraction" in report.kept[0][1]
    assert f"kept     {target.scene_id}: newer processing" in report.summary()
    after, _ = load_manifest(store, site.id)
    assert after.frames == before.frames and after.superseded == () and after.dirty_from is None
    declined = after.declined(target.scene_id)
    assert declined is not None and declined.processing_baseline == NEW and declined.reason.startswith("clear")
    # Not read again while the catalog lists the same items for the scene.
    reader = RasterioReader()
    again = ingest(site, open_catalog(str(catalog)), store, reader=reader, deep=True)
    assert again.kept == [] and again.replaced == [] and reader.stats.bytes_read == 0
    # A later processing (other items) that passes replaces the frame, and clears the declined record.
    later = with_reprocessing(items, target, tmp_path / "re2", baseline="05.12")
    done = ingest(site, open_catalog(str(write_items(tmp_path / "later.json", later))), store, deep=True)
    assert [(r.scene_id, r.new_baseline) for r in done.replaced] == [(target.scene_id, "05.12")]
    final, _ = load_manifest(store, site.id)
    assert final.declined_reprocessings == () and final.frame(target.scene_id).processing_baseline == "05.12"


def test_equal_or_older_processing_changes_nothing(demo, tracked, tmp_path):
    site, items = demo
    store = copy_store(tracked, tmp_path / "store")
    before = store.get(keys.manifest(site.id))
    target = next(f for f in load_manifest(store, site.id)[0].frames if f.processing_baseline == "04.00")
    same = with_reprocessing(items, target, tmp_path / "same", baseline="04.00", heal=False)  # other ids, same baseline
    catalog = write_items(tmp_path / "same.json", same)
    reader = RasterioReader()
    report = ingest(site, open_catalog(str(catalog)), store, reader=reader, deep=True)
    assert report.replaced == [] and report.kept == [] and reader.stats.bytes_read == 0
    # A catalog that lists only an older processing of it (another catalog, or one not updated yet): nothing.
    older = [i for i in items if i["id"] not in target.item_ids]
    older += [
        reprocess(i, tmp_path / "older", baseline="03.01", heal=False) for i in items if i["id"] in target.item_ids
    ]
    report = ingest(site, open_catalog(str(write_items(tmp_path / "older.json", older))), store, deep=True)
    assert report.replaced == [] and report.kept == [] and report.appended == []
    assert store.get(keys.manifest(site.id)) == before


def test_cli_run_reports_the_replacement_and_retracks(demo, tracked, tmp_path):
    """`scarmon run` (ingest then track, through the service runner) with a search from the site's first date."""
    import yaml
    from click.testing import CliRunner

    from scarmon.cli import main

    site, items = demo
    store = copy_store(tracked, tmp_path / "store")
    frames = load_manifest(store, site.id)[0].frames
    target = next(f for f in frames[1:] if f.processing_baseline == "02.12")
    index = [f.scene_id for f in frames].index(target.scene_id)
    catalog = write_items(tmp_path / "items.json", with_reprocessing(items, target, tmp_path / "re"))
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(json.loads(json.dumps(demo_site("creep-failure"), default=str))))
    args = ["run", "--site", str(site_file), "--catalog", str(catalog), "--store", str(tmp_path / "store")]
    result = CliRunner().invoke(main, [*args, "--start", START])
    assert result.exit_code == 0, result.output
    assert f"replaced {target.scene_id}: processing 02.12 → {NEW}; tracking re-runs from {target.date}" in (
        result.output
    )
    assert f"tracked {len(frames) - index} frame(s) from #{index} of {len(frames)}" in result.output
    again = CliRunner().invoke(main, [*args, "--start", START])
    assert again.exit_code == 0 and "replaced" not in again.output and "nothing new to track" in again.output
