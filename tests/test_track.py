"""Tracking a stored sequence: masks and series written, resume tracks only new frames and equals a full run,
a late earlier frame re-runs tracking from there."""

import csv
import datetime as dt
import io
import json

import numpy as np
import pytest

from scarmon.demo.synthetic import demo_site, generate_catalog, truth_mask
from scarmon.grid import SiteGrid
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.site import parse_site
from scarmon.store import keys
from scarmon.store.backends import open_store
from scarmon.store.sequence import load_manifest
from scarmon.tracking.pipeline import read_mask, track_site


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    site = parse_site(demo_site("creep-failure"))
    items = generate_catalog(
        tmp_path_factory.mktemp("cat"), site, scenario="creep-failure", start="2021-10-01", end="2022-03-10"
    )
    return site, items


def test_track_writes_masks_and_series(demo, tmp_path):
    site, items = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store)
    report = track_site(site, store)
    manifest, _ = load_manifest(store, site.id)
    assert (
        report.tracked == [f.scene_id for f in manifest.frames]
        and manifest.tracked_until == manifest.frames[-1].datetime
    )
    grid = SiteGrid.from_dict(manifest.grid)
    rows = list(csv.DictReader(io.StringIO(store.get(f"{site.id}/series.csv").decode())))
    assert [r["date"] for r in rows] == [f.date for f in manifest.frames]
    # numbers for people: no 16-digit floats in the CSV (series.json keeps them unrounded)
    assert all(len(v.split(".")[-1]) <= 4 for r in rows for v in r.values() if v.replace(".", "").lstrip("-").isdigit())
    for frame, row in zip(manifest.frames, rows, strict=True):
        key = keys.mask(site.id, frame)
        assert key.split("/")[-1].startswith(frame.date) and key.endswith(".tif")
        mask = read_mask(store, key)
        assert float(row["area_m2"]) == mask.sum() * grid.pixel_area_m2
        truth = truth_mask(site, grid, dt.date.fromisoformat(frame.date), scenario="creep-failure")
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85, frame.date
    assert track_site(site, store).tracked == []  # nothing new


def test_resume_tracks_only_new_frames_and_equals_full_run(demo, tmp_path):
    site, items = demo
    full = open_store(str(tmp_path / "full"))
    ingest(site, open_catalog(str(items)), full)
    track_site(site, full)
    inc = open_store(str(tmp_path / "inc"))
    ingest(site, open_catalog(str(items)), inc, end=dt.date(2021, 12, 31))
    first = track_site(site, inc)
    ingest(site, open_catalog(str(items)), inc)
    second = track_site(site, inc)
    manifest, _ = load_manifest(inc, site.id)
    assert second.start_index == len(first.tracked) and len(first.tracked) + len(second.tracked) == len(manifest.frames)
    for frame in manifest.frames:
        assert np.array_equal(read_mask(inc, keys.mask(site.id, frame)), read_mask(full, keys.mask(site.id, frame)))
    assert json.loads(inc.get(f"{site.id}/series.json")) == json.loads(full.get(f"{site.id}/series.json"))


def test_late_frame_retracks_from_there(demo, tmp_path):
    site, items = demo
    features = json.loads(items.read_text())["features"]
    ref = open_store(str(tmp_path / "ref"))
    ingest(site, open_catalog(str(items)), ref)
    frames = load_manifest(ref, site.id)[0].frames
    late = frames[-3]
    day = late.date.replace("-", "")
    partial = tmp_path / "partial.json"
    partial.write_text(
        json.dumps({"type": "FeatureCollection", "features": [f for f in features if day not in f["id"]]})
    )
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(partial)), store)
    track_site(site, store)
    ingest(site, open_catalog(str(items)), store)
    report = track_site(site, store)
    assert report.tracked == [f.scene_id for f in frames[-3:]]
    manifest, _ = load_manifest(store, site.id)
    assert manifest.dirty_from is None and manifest.tracked_until == frames[-1].datetime


def test_prompts_and_boxes_map_to_frames_and_pixels():
    from scarmon.site import BoxPrompt, Prompt
    from scarmon.store.sequence import FrameEntry
    from scarmon.tracking.pipeline import prompts_by_frame

    grid = SiteGrid(32647, 2.0, 470300.0, 3440300.0, 1520, 1510)
    frames = [
        FrameEntry(
            date=d,
            scene_id=f"S2A_{d.replace('-', '')}_R033",
            datetime=f"{d}T04:00:00Z",
            item_ids=("x",),
            processing_baseline="05.00",
            coverage=1.0,
            clear_fraction=1.0,
            objects={"ndvi": "a", "video": "b"},
        )
        for d in ("2021-01-05", "2021-02-04", "2021-03-06")
    ]
    lon, lat = grid.pixel_to_lonlat(100, 200)
    point = Prompt(lon=lon, lat=lat, label=1, date=dt.date(2021, 2, 1))
    w, n = grid.pixel_to_lonlat(10, 20)
    e, s = grid.pixel_to_lonlat(50, 80)
    box = BoxPrompt(box=(w, s, e, n), date=dt.date(2021, 3, 1))
    got = prompts_by_frame([point], frames, grid, boxes=[box], to_first=False)
    assert list(got) == [1, 2]
    ((c, r, label),) = got[1]
    assert (round(c - 0.5), round(r - 0.5), label) == (100, 200, 1)
    (c0, r0, l0), (c1, r1, l1) = got[2]
    assert (l0, l1) == (2, 3)
    assert max(abs(c0 - 10.5), abs(r0 - 20.5), abs(c1 - 50.5), abs(r1 - 80.5)) < 1.0  # UTM vs lon/lat skew
    assert sorted(prompts_by_frame([point], frames, grid, boxes=[box], to_first=True)) == [0, 2]
    assert sorted(prompts_by_frame([point], frames, grid, boxes=[box])) == [1, 2]  # by default on their own date


def test_prompts_dated_after_the_first_frame_start_there_and_track_back(demo, tmp_path):
    """Prompts stay on their own date: frames before it are tracked backward from it (the scar existed then too),
    nothing before the prompted frame can be resumed from, and a prompt on ground with no scar says so."""
    site, items = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store)
    frames = load_manifest(store, site.id)[0].frames
    late = dt.date.fromisoformat(frames[3].date)
    moved = parse_site(
        {
            **demo_site("creep-failure"),
            "prompts": [{**p, "date": late.isoformat()} for p in demo_site("creep-failure")["prompts"]],
        }
    )
    report = track_site(moved, store)
    assert report.warnings == [] and "WARNING" not in report.summary()
    grid = SiteGrid.from_dict(load_manifest(store, site.id)[0].grid)
    for frame in frames[:4]:
        mask = read_mask(store, keys.mask(site.id, frame))
        truth = truth_mask(site, grid, dt.date.fromisoformat(frame.date), scenario="creep-failure")
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85, frame.date
    from scarmon.tracking.pipeline import _resume_point
    from scarmon.tracking.trackers import make_tracker

    manifest = load_manifest(store, site.id)[0]
    tracker = make_tracker(site.ndvi_threshold)
    assert _resume_point(store, site.id, tracker, manifest, 3) == (0, None)  # no state before the prompted frame
    resumed, state = _resume_point(store, site.id, tracker, manifest, len(frames))
    assert resumed == len(frames) and state
    # A positive click on intact vegetation (the negative prompt's place) is reported, not tracked in silence.
    raw = demo_site("creep-failure")
    veg = next(p for p in raw["prompts"] if p["label"] == 0)
    lost = parse_site({**raw, "id": "lost", "prompts": [{**veg, "label": 1}]})
    other = open_store(str(tmp_path / "o"))
    ingest(lost, open_catalog(str(items)), other)
    report = track_site(lost, other)
    assert len(report.warnings) == 1 and "no low-NDVI ground" in report.warnings[0]
    assert "WARNING" in report.summary()


def test_confidence_flags_carry_the_trackers_reason():
    from scarmon.tracking.features import confidence_flags

    flags = confidence_flags(
        [100.0, 130.0, 131.0],
        [1.0, 1.0, 1.0],
        tracker=["", "held new area of 30% of the scar: next to cloud or snow", ""],
    )
    assert flags[0] == (False, "") and flags[2] == (False, "")
    assert flags[1] == (True, "held new area of 30% of the scar: next to cloud or snow")
