"""SAM 2 through the stored-sequence path: a checkpoint file (random weights saved by the test, since trained
weights cannot be downloaded here) loaded by the real loader, windowed tracking, resume after new frames equal to
a full re-propagation, tracker identity, checkpoint errors on the CLI."""

import datetime as dt
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from scarmon.store import keys
from scarmon.cli import main
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.store.sequence import load_manifest
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.demo.synthetic import demo_site, generate_catalog
from scarmon.tracking.pipeline import read_mask, track_site

torch = pytest.importorskip("torch")
SIZE = 256


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


def sam2_tracker(checkpoint):
    from scarmon.tracking.trackers import Sam2Settings, Sam2Tracker

    return Sam2Tracker(Sam2Settings(checkpoint=str(checkpoint), device="cpu", image_size=SIZE))


def iou(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else (a & b).sum() / u


def test_resume_matches_full_repropagation(demo, checkpoint, tmp_path):
    site, items, _ = demo
    tracker = sam2_tracker(checkpoint)
    full = open_store(str(tmp_path / "full"))
    ingest(site, open_catalog(str(items)), full)
    report = track_site(site, full, tracker=tracker)
    manifest, _ = load_manifest(full, site.id)
    n = len(manifest.frames)
    assert report.tracker == "sam2" and len(report.tracked) == n > tracker.window  # several windows
    inc = open_store(str(tmp_path / "inc"))
    ingest(site, open_catalog(str(items)), inc, end=dt.date.fromisoformat(manifest.frames[n - 3].date))
    track_site(site, inc, tracker=tracker)
    ingest(site, open_catalog(str(items)), inc)
    second = track_site(site, inc, tracker=tracker)
    assert second.tracked == [f.scene_id for f in manifest.frames[n - 2:]]
    for f in manifest.frames:
        a, b = read_mask(inc, keys.mask(site.id, f)), read_mask(full, keys.mask(site.id, f))
        assert iou(a, b) >= 0.99, f.date
    # Masks are not trivially empty or full with these random weights, so the comparison means something.
    fill = [read_mask(full, keys.mask(site.id, f)).mean() for f in manifest.frames]
    assert any(0.001 < x < 0.999 for x in fill)
    # Bounded state: one resume state per kept frame, none larger than the first few.
    sizes = [len(inc.get(state_key(site.id, "sam2", f))) for f in manifest.frames[-3:]]
    assert max(sizes) < 8 * 1024 * 1024


def test_switching_tracker_retracks_from_first_frame(demo, checkpoint, tmp_path):
    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2022, 1, 20))
    track_site(site, store)  # knowledge tracker
    report = track_site(site, store, tracker=sam2_tracker(checkpoint))
    assert report.tracker == "sam2" and report.start_index == 0 and len(report.tracked) == report.total_frames


def test_bad_checkpoint_is_a_clear_cli_error(demo, tmp_path, monkeypatch):
    site, items, root = demo
    store = tmp_path / "s"
    ingest(site, open_catalog(str(items)), open_store(str(store)), end=dt.date(2021, 12, 20))
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("SCARMON_SAM2_IMAGE_SIZE", str(SIZE))
    r = CliRunner().invoke(main, ["track", "--site", str(root / "site.yaml"), "--store", str(store),
                                  "--sam2-checkpoint", str(junk)])
    assert r.exit_code == 1 and "weights.pt" in r.output and "Traceback" not in r.output


def test_prompt_after_first_frame_tracks_backward_then_resumes(demo, checkpoint, tmp_path):
    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2022, 2, 20))
    manifest, _ = load_manifest(store, site.id)
    late = manifest.frames[2].date
    moved = site.model_copy(update={"prompts": tuple(p.model_copy(update={"date": dt.date.fromisoformat(late)})
                                                    for p in site.prompts)})
    tracker = sam2_tracker(checkpoint)
    report = track_site(moved, store, tracker=tracker)
    assert report.tracked == [f.scene_id for f in manifest.frames]  # frames 0-1 tracked backward from frame 2
    assert all(inc_state for inc_state in [store.get(state_key(site.id, "sam2", f)) for f in manifest.frames[2:]])
    ingest(site, open_catalog(str(items)), store)
    again = track_site(moved, store, tracker=tracker)
    assert again.start_index == len(manifest.frames) and again.tracked


def test_sam2_correction_sticks_and_only_retracks_from_its_frame(demo, checkpoint, tmp_path):
    from scarmon.tracking.corrections import add_corrections
    from scarmon.grid import SiteGrid
    from scarmon.tracking.sam2_engine import describe_resume

    site, items, _ = demo
    store = open_store(str(tmp_path / "s"))
    ingest(site, open_catalog(str(items)), store, end=dt.date(2022, 3, 10))
    tracker = sam2_tracker(checkpoint)
    track_site(site, store, tracker=tracker)
    manifest, _ = load_manifest(store, site.id)
    before = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    j = len(manifest.frames) - 3
    grid = SiteGrid.from_dict(manifest.grid)
    lon, lat = grid.pixel_to_lonlat(grid.width * 0.5, grid.height * 0.5)
    add_corrections(store, site, dt.date.fromisoformat(manifest.frames[j].date), [(float(lon), float(lat), 0)])
    report = track_site(site, store, tracker=tracker)
    assert report.start_index == j and len(report.tracked) == 3
    after = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    assert all(np.array_equal(a, b) for a, b in zip(after[:j], before[:j]))
    assert not np.array_equal(after[j], before[j])
    last_state = describe_resume(store.get(state_key(site.id, "sam2", manifest.frames[-1])))
    assert j in last_state["corrections"] or j in last_state.get("conditioning_frames", [])
