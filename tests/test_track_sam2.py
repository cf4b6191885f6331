"""SAM 2 through the stored-sequence path, compared EXACTLY against one engine call over all frames.

A checkpoint file (random weights saved by the test, since trained weights cannot be downloaded here) is loaded by
the real loader. `track_site` tracks window by window and resumes from stored (pruned) states; whatever it did,
the stored masks must equal those of ONE engine call over all frames with the same prompts and corrections, and
the stored state of the last frame must equal that call's resume state tensor for tensor. A self-check corrupts
the stored state a resume starts from and requires the comparison to fail.
"""

import datetime as dt
import io
import json
import logging
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from scarmon import defaults
from scarmon.cli import main
from scarmon.demo.synthetic import demo_site, generate_catalog
from scarmon.grid import SiteGrid
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.frames import decode_ndvi, decode_png
from scarmon.ingest.pipeline import ingest
from scarmon.site import parse_site
from scarmon.store import keys
from scarmon.store.backends import open_store
from scarmon.store.sequence import load_manifest
from scarmon.tracking.corrections import add_corrections, load_corrections
from scarmon.tracking.pipeline import prompts_by_frame, read_mask, track_site

torch = pytest.importorskip("torch")
SIZE = 128


KEEP_RECENT, EVERY = 3, 4  # scaled-down state pruning (defaults: 8 and 10), so 11 frames have pruned states


@pytest.fixture(scope="module", autouse=True)
def small_pruning():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(defaults, "KEEP_RECENT_STATES", KEEP_RECENT)
        mp.setattr(defaults, "STATE_EVERY", EVERY)
        yield


def kept_before(n: int, k: int) -> int:
    """The frame a re-track from frame k starts at: after the nearest earlier frame whose state is kept."""
    return next((i + 1 for i in range(k - 1, -1, -1) if i >= n - KEEP_RECENT or (i + 1) % EVERY == 0), 0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from scarmon.tracking.sam2_engine import EngineConfig, build_predictor

    torch.manual_seed(0)
    predictor = build_predictor(EngineConfig(image_size=SIZE))
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_t_random.pt"
    torch.save({"model": predictor.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam2")
    raw = demo_site("creep-failure")
    site = parse_site(raw)
    (root / "site.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
    items = generate_catalog(root / "cat", site, start="2021-12-01", end="2022-04-20")
    return site, items, root


@pytest.fixture(scope="module")
def tracker(checkpoint):
    from scarmon.tracking.trackers import Sam2Settings, Sam2Tracker

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores
    yield Sam2Tracker(Sam2Settings(checkpoint=str(checkpoint), device="cpu", image_size=SIZE, window=5))
    torch.set_num_threads(threads)


def reference(site, store, tracker):
    """ONE engine call over every frame of the stored sequence, with the site prompts and stored corrections."""
    manifest, _ = load_manifest(store, site.id)
    grid = SiteGrid.from_dict(manifest.grid)
    frames = manifest.frames
    videos = [decode_png(store.get(f.objects["video"])) for f in frames]
    valid = [np.isfinite(decode_ndvi(store.get(f.objects["ndvi"]))) for f in frames]
    prompts = prompts_by_frame(site.prompts, frames, grid, boxes=site.boxes, to_first=False)
    corrections = prompts_by_frame(load_corrections(store, site.id), frames, grid, to_first=False)
    return tracker.engine.track_detailed(videos, prompts, corrections=corrections, valid=valid)


def differences(site, store, ref) -> list[str]:
    from scarmon.tracking.sam2_engine import compare_resume

    frames = load_manifest(store, site.id)[0].frames
    out = [
        f"mask of frame {i}"
        for i, f in enumerate(frames)
        if not np.array_equal(read_mask(store, keys.mask(site.id, f)), ref.masks[i])
    ]
    return out + compare_resume(store.get(keys.tracker_state(site.id, "sam2", frames[-1])), ref.resume)


def corrupt_oldest_pointer(state: bytes) -> bytes:
    rs = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
    del rs["frames"][min(g for g, r in rs["frames"].items() if not r["cond"])]
    buf = io.BytesIO()
    torch.save(rs, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tracked(demo, tracker, tmp_path_factory):
    """The whole sequence tracked in windows, and the one-call reference."""
    site, items, _ = demo
    path = tmp_path_factory.mktemp("full")
    store = open_store(str(path))
    ingest(site, open_catalog(str(items)), store)
    report = track_site(site, store, tracker=tracker)
    return store, report, reference(site, store, tracker), path


def test_windowed_track_site_equals_one_engine_call(demo, tracker, tracked):
    site, _, _ = demo
    store, report, ref, _ = tracked
    n = report.total_frames
    assert report.tracker == "sam2" and len(report.tracked) == n > 2 * tracker.window  # several windows
    fill = [float(m.mean()) for m in ref.masks]
    assert all(0.01 < x < 0.99 for x in fill), "random-weight masks are trivial: the comparison would be weak"
    assert differences(site, store, ref) == []


def test_resume_after_new_frames_equals_one_call_and_a_corrupted_state_fails(demo, tracker, tracked, tmp_path):
    site, items, _ = demo
    _, _, ref, _ = tracked
    frames = load_manifest(tracked[0], site.id)[0].frames
    n = len(frames)
    inc = open_store(str(tmp_path / "inc"))
    ingest(site, open_catalog(str(items)), inc, end=dt.date.fromisoformat(frames[n - 3].date))
    track_site(site, inc, tracker=tracker)
    bad_dir = tmp_path / "bad"
    shutil.copytree(tmp_path / "inc", bad_dir)
    for d in (tmp_path / "inc", bad_dir):
        ingest(site, open_catalog(str(items)), open_store(str(d)))
    second = track_site(site, inc, tracker=tracker)
    assert second.tracked == [f.scene_id for f in frames[n - 2 :]]
    assert differences(site, inc, ref) == []
    # self-check: the same resume from a state missing its oldest pointer frame must be caught
    bad = open_store(str(bad_dir))
    key = keys.tracker_state(site.id, "sam2", frames[n - 3])
    bad.put(key, corrupt_oldest_pointer(bad.get(key)))
    assert track_site(site, bad, tracker=tracker).tracked == second.tracked
    assert differences(site, bad, ref) != []


def test_corrections_far_back_equal_a_from_scratch_run(demo, tracker, tracked, tmp_path):
    """Two corrections in one window, the first 6 frames back (its state was pruned: the re-track starts from an
    older kept state), then tracking: exactly one from-scratch call with those corrections."""
    site, _, _ = demo
    shutil.copytree(tracked[3], tmp_path / "s")  # a copy of the tracked store
    store = open_store(str(tmp_path / "s"))
    manifest, _ = load_manifest(store, site.id)
    n = len(manifest.frames)
    j = n - 6
    assert kept_before(n, j) < j  # the state before j was pruned
    grid = SiteGrid.from_dict(manifest.grid)
    lon, lat = grid.pixel_to_lonlat(grid.width * 0.5, grid.height * 0.5)
    lon2, lat2 = grid.pixel_to_lonlat(grid.width * 0.45, grid.height * 0.55)
    add_corrections(store, site, dt.date.fromisoformat(manifest.frames[j].date), [(float(lon), float(lat), 0)])
    add_corrections(store, site, dt.date.fromisoformat(manifest.frames[j + 2].date), [(float(lon2), float(lat2), 1)])
    before = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    report = track_site(site, store, tracker=tracker)
    assert report.start_index == kept_before(n, j) > 0  # from a kept state before j, not from scratch
    ref = reference(site, store, tracker)
    assert differences(site, store, ref) == []
    after = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    assert all(np.array_equal(a, b) for a, b in zip(after[:j], before[:j], strict=True))
    from scarmon.tracking.sam2_engine import describe_resume

    info = describe_resume(store.get(keys.tracker_state(site.id, "sam2", manifest.frames[-1])))
    assert {j, j + 2} <= set(info["corrections"]) and {j, j + 2} <= set(info["cond_frames"])


def test_changed_prompts_retrack_from_the_changed_date(demo, tracker, tracked, tmp_path, caplog):
    site, _, _ = demo
    shutil.copytree(tracked[3], tmp_path / "s")
    store = open_store(str(tmp_path / "s"))
    manifest, _ = load_manifest(store, site.id)
    k = len(manifest.frames) - 4
    extra = site.prompts[0].model_copy(update={"date": dt.date.fromisoformat(manifest.frames[k].date)})
    changed = site.model_copy(update={"prompts": (*site.prompts, extra)})
    with caplog.at_level(logging.WARNING, logger="scarmon.tracking.pipeline"):
        report = track_site(changed, store, tracker=tracker)
    n = len(manifest.frames)
    assert report.start_index == kept_before(n, k) > 0 and len(report.tracked) == n - report.start_index
    assert any("changed: re-tracking" in r.getMessage() for r in caplog.records)
    info = describe_last(store, site.id, manifest)
    assert k in info["site_prompts"]


def describe_last(store, site_id, manifest):
    from scarmon.tracking.sam2_engine import describe_resume

    return describe_resume(store.get(keys.tracker_state(site_id, "sam2", manifest.frames[-1])))


def test_prompt_after_the_newest_frame_is_nothing_to_track_yet(demo, tracker, tmp_path):
    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2021, 12, 20))
    late = tuple(p.model_copy(update={"date": dt.date(2022, 6, 1)}) for p in site.prompts)
    report = track_site(site.model_copy(update={"prompts": late, "boxes": ()}), store, tracker=tracker)
    assert report.tracked == [] and "nothing new to track" in report.summary()


def test_prompt_after_first_frame_tracks_backward_then_resumes(demo, tracker, tmp_path):
    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2022, 1, 20))
    manifest, _ = load_manifest(store, site.id)
    late = manifest.frames[2].date
    moved = site.model_copy(
        update={"prompts": tuple(p.model_copy(update={"date": dt.date.fromisoformat(late)}) for p in site.prompts)}
    )
    report = track_site(moved, store, tracker=tracker)
    assert report.tracked == [f.scene_id for f in manifest.frames]  # frames 0-1 tracked backward from frame 2
    assert differences(moved, store, reference(moved, store, tracker)) == []


def test_switching_tracker_retracks_from_first_frame(demo, tracker, tmp_path):
    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2021, 12, 20))
    track_site(site, store)  # knowledge tracker
    report = track_site(site, store, tracker=tracker)
    assert report.tracker == "sam2" and report.start_index == 0 and len(report.tracked) == report.total_frames


def test_bad_checkpoint_is_a_clear_cli_error(demo, tmp_path, monkeypatch):
    site, items, root = demo
    store = tmp_path / "s"
    ingest(site, open_catalog(str(items)), open_store(str(store)), end=dt.date(2021, 12, 20))
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("SCARMON_SAM2_IMAGE_SIZE", str(SIZE))
    r = CliRunner().invoke(
        main, ["track", "--site", str(root / "site.yaml"), "--store", str(store), "--sam2-checkpoint", str(junk)]
    )
    assert r.exit_code == 1 and "weights.pt" in r.output and "Traceback" not in r.output
