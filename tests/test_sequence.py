"""The sequence manifest: pure merge rules, then append/load/mark_tracked against a folder and S3 (moto)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scarmon.store import keys
from scarmon.store.backends import open_store
from scarmon.store.sequence import (
    FORMAT,
    FrameEntry,
    Manifest,
    Rejection,
    SequenceError,
    append,
    load_manifest,
    mark_tracked,
    merge,
)

REPO = Path(__file__).resolve().parents[1]
GRID = {"crs": "EPSG:32633", "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0], "shape": [64, 64]}
SITE = "slide-1"


def frame(scene: str, when: str, site: str = SITE) -> FrameEntry:
    return FrameEntry(
        date=when[:10],
        scene_id=scene,
        datetime=when,
        item_ids=(f"S2A_{scene}",),
        processing_baseline="05.10",
        coverage=1.0,
        clear_fraction=0.9,
        objects={"ndvi": f"{site}/frames/{scene}/ndvi.tif", "video": f"{site}/frames/{scene}/v.png"},
    )


def rejection(scene: str, when: str) -> Rejection:
    return Rejection(
        date=when[:10],
        scene_id=scene,
        datetime=when,
        reason="clear fraction 0.10 < 0.70",
        coverage=1.0,
        clear_fraction=0.1,
    )


def data_for(*frames: FrameEntry) -> dict[str, bytes]:
    return {key: f"{f.scene_id}:{role}".encode() for f in frames for role, key in f.objects.items()}


# --- pure merge ------------------------------------------------------------------------------------------------


def test_merge_orders_frames_and_reports() -> None:
    empty = Manifest.empty(SITE)
    assert empty.cursor() is None and empty.known_scene_ids() == set()
    f2, f1, f3 = (
        frame("s2", "2024-05-11T10:00:00Z"),
        frame("s1", "2024-05-01T10:00:00Z"),
        frame("s3", "2024-05-21T10:00:00+00:00"),
    )
    r1 = rejection("r1", "2024-05-25T10:00:00Z")
    m, rep = merge(empty, frames=[f2, f3, f1], rejections=[r1], grid=GRID)
    assert [f.scene_id for f in m.frames] == ["s1", "s2", "s3"]
    assert rep.appended == ("s1", "s2", "s3") and rep.rejected == ("r1",) and rep.already_present == ()
    assert m.revision == rep.revision == 1 and m.grid == GRID
    assert m.known_scene_ids() == {"s1", "s2", "s3", "r1"}
    assert m.cursor() == "2024-05-25T10:00:00Z"  # a rejection counts for the cursor
    assert empty.frames == ()  # pure: the input is untouched


def test_merge_same_datetime_orders_by_scene_id() -> None:
    m, _ = merge(
        Manifest.empty(SITE),
        frames=[frame("b", "2024-05-01T10:00:00Z"), frame("a", "2024-05-01T10:00:00Z")],
        rejections=[],
        grid=GRID,
    )
    assert [f.scene_id for f in m.frames] == ["a", "b"]


def test_merge_is_idempotent() -> None:
    frames, rejections = [frame("s1", "2024-05-01T10:00:00Z")], [rejection("r1", "2024-05-06T10:00:00Z")]
    m1, _ = merge(Manifest.empty(SITE), frames=frames, rejections=rejections, grid=GRID)
    m2, rep = merge(m1, frames=frames, rejections=rejections, grid=GRID)
    assert m2 is m1 and m2.revision == 1
    assert rep.appended == () and rep.rejected == () and rep.already_present == ("s1", "r1") and not rep.changed


def test_rejected_scene_offered_as_frame_stays_rejected() -> None:
    m1, _ = merge(Manifest.empty(SITE), frames=[], rejections=[rejection("s1", "2024-05-01T10:00:00Z")], grid=GRID)
    m2, rep = merge(m1, frames=[frame("s1", "2024-05-01T10:00:00Z")], rejections=[], grid=GRID)
    assert m2 is m1 and m2.frames == () and rep.already_present == ("s1",)


def test_late_insertion_sets_dirty_from() -> None:
    m, _ = merge(
        Manifest.empty(SITE),
        frames=[frame("s1", "2024-05-01T10:00:00Z"), frame("s3", "2024-05-21T10:00:00Z")],
        rejections=[],
        grid=GRID,
    )
    m = replace(m, tracked_until="2024-05-21T10:00:00Z")
    m, rep = merge(m, frames=[frame("s4", "2024-05-31T10:00:00Z")], rejections=[], grid=GRID)
    assert not rep.inserted_before_tracked and m.dirty_from is None  # after tracked_until: normal
    m, rep = merge(m, frames=[frame("s2", "2024-05-11T10:00:00Z")], rejections=[], grid=GRID)
    assert rep.inserted_before_tracked and m.dirty_from == rep.dirty_from == "2024-05-11T10:00:00Z"
    assert [f.scene_id for f in m.frames] == ["s1", "s2", "s3", "s4"]
    m, rep = merge(m, frames=[frame("s2b", "2024-05-15T10:00:00Z")], rejections=[], grid=GRID)
    assert m.dirty_from == "2024-05-11T10:00:00Z"  # min with the existing dirty_from
    m, rep = merge(m, frames=[frame("s0", "2024-04-21T10:00:00+00:00")], rejections=[], grid=GRID)
    assert m.dirty_from == "2024-04-21T10:00:00+00:00"
    # Same datetime as tracked_until but a later scene_id: the tracker never saw it either.
    m, rep = merge(m, frames=[frame("s3z", "2024-05-21T10:00:00Z")], rejections=[], grid=GRID)
    assert rep.inserted_before_tracked
    # A late *rejection* changes nothing for tracking.
    m2, rep = merge(
        replace(m, dirty_from=None), frames=[], rejections=[rejection("r0", "2024-04-01T10:00:00Z")], grid=GRID
    )
    assert m2.dirty_from is None and not rep.inserted_before_tracked


def test_grid_mismatch_raises() -> None:
    m, _ = merge(Manifest.empty(SITE), frames=[frame("s1", "2024-05-01T10:00:00Z")], rejections=[], grid=GRID)
    same = {**GRID, "transform": tuple(GRID["transform"])}  # tuple vs list is the same grid once stored
    assert merge(m, frames=[], rejections=[], grid=same)[0] is m
    with pytest.raises(SequenceError, match="grid changed.*new site id or a new store"):
        merge(m, frames=[frame("s2", "2024-05-11T10:00:00Z")], rejections=[], grid={**GRID, "shape": [65, 64]})


def test_invalid_input_rejected() -> None:
    with pytest.raises(SequenceError, match="more than once"):
        merge(
            Manifest.empty(SITE),
            frames=[frame("s1", "2024-05-01T10:00:00Z")],
            rejections=[rejection("s1", "2024-05-01T10:00:00Z")],
            grid=GRID,
        )
    with pytest.raises(SequenceError, match="YYYY-MM-DD"):
        replace(frame("s1", "2024-05-01T10:00:00Z"), date="2024/05/01")
    with pytest.raises(SequenceError, match="ISO 8601"):
        replace(frame("s1", "2024-05-01T10:00:00Z"), datetime="yesterday")
    with pytest.raises(SequenceError, match="coverage"):
        replace(frame("s1", "2024-05-01T10:00:00Z"), coverage=float("nan"))
    with pytest.raises(SequenceError, match="invalid site id"):
        Manifest.empty("Bad_Site")
    with pytest.raises(SequenceError, match=r"\.\."):
        FrameEntry("2024-05-01", "s", "2024-05-01T10:00:00Z", (), None, 1.0, 1.0, {"ndvi": "../x.tif"})


# --- against stores ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_uri"))


class CountingStore:
    """Delegates to a real store, counting writes (a spy, not a mock: every call really happens)."""

    def __init__(self, inner) -> None:
        self.inner, self.puts = inner, []
        self.uri = inner.uri

    def put(self, key, data, **kw):
        self.puts.append(key)
        return self.inner.put(key, data, **kw)

    def put_if(self, key, data, **kw):
        self.puts.append(key)
        return self.inner.put_if(key, data, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_append_then_load(store) -> None:
    manifest, tag = load_manifest(store, SITE)
    assert tag is None and manifest == Manifest.empty(SITE)
    f1, f2 = frame("s1", "2024-05-01T10:00:00Z"), frame("s2", "2024-05-11T10:00:00Z")
    rep = append(
        store,
        SITE,
        frames=[f2, f1],
        rejections=[rejection("r1", "2024-05-06T10:00:00Z")],
        grid=GRID,
        data=data_for(f1, f2),
    )
    assert rep.appended == ("s1", "s2") and rep.rejected == ("r1",) and rep.revision == 1
    manifest, tag = load_manifest(store, SITE)
    assert tag is not None and manifest.frames == (f1, f2) and manifest.grid == GRID and manifest.revision == 1
    assert store.get(f2.objects["ndvi"]) == b"s2:ndvi"
    raw = store.get(keys.manifest(SITE))
    doc = json.loads(raw)
    assert doc["format"] == FORMAT and doc["site_id"] == SITE
    assert raw.decode() == json.dumps(doc, sort_keys=True, indent=1) + "\n"
    assert sorted(store.list(f"{SITE}/")) == sorted([keys.manifest(SITE), *data_for(f1, f2)])


def test_append_twice_is_idempotent(store) -> None:
    f1, f2 = frame("s1", "2024-05-01T10:00:00Z"), frame("s2", "2024-05-11T10:00:00Z")
    append(
        store,
        SITE,
        frames=[f1, f2],
        rejections=[rejection("r1", "2024-05-06T10:00:00Z")],
        grid=GRID,
        data=data_for(f1, f2),
    )
    before = store.get_with_tag(keys.manifest(SITE))
    spy = CountingStore(store)
    rep = append(
        spy,
        SITE,
        frames=[f1, f2],
        rejections=[rejection("r1", "2024-05-06T10:00:00Z")],
        grid=GRID,
        data=data_for(f1, f2),
    )
    assert rep.appended == () and rep.rejected == () and rep.already_present == ("s1", "r1", "s2")
    assert rep.revision == 1 and spy.puts == []  # no data rewritten, no manifest swap
    assert store.get_with_tag(keys.manifest(SITE)) == before
    # A mixed re-run writes only the new scene's objects.
    f3 = frame("s3", "2024-05-21T10:00:00Z")
    rep = append(spy, SITE, frames=[f1, f3], rejections=[], grid=GRID, data=data_for(f1, f3))
    assert rep.appended == ("s3",) and rep.already_present == ("s1",) and rep.revision == 2
    assert sorted(spy.puts) == sorted([*f3.objects.values(), keys.manifest(SITE)])


def test_corrupt_manifest_raises_and_is_not_overwritten(store) -> None:
    key = keys.manifest(SITE)
    for bad in (
        b"{ not json",
        b'{"format": "scarmon.sequence/99"}',
        b'{"format": "scarmon.sequence/1"}',
        json.dumps({"format": FORMAT, "site_id": "other-site"}).encode(),
    ):
        store.put(key, bad)
        with pytest.raises(SequenceError) as exc:
            load_manifest(store, SITE)
        assert "manifest.json" in str(exc.value) and "will not overwrite" in str(exc.value)
        f1 = frame("s1", "2024-05-01T10:00:00Z")
        with pytest.raises(SequenceError):
            append(store, SITE, frames=[f1], rejections=[], grid=GRID, data=data_for(f1))
        with pytest.raises(SequenceError):
            mark_tracked(store, SITE, tracked_until="2024-05-01T10:00:00Z", clear_dirty=True)
        assert store.get(key) == bad
        assert store.list(f"{SITE}/frames/") == []  # nothing written before the manifest was understood


def test_append_guards_data_keys(store) -> None:
    f1 = frame("s1", "2024-05-01T10:00:00Z")
    with pytest.raises(SequenceError, match="not referenced"):
        append(store, SITE, frames=[f1], rejections=[], grid=GRID, data={**data_for(f1), f"{SITE}/frames/x": b""})
    with pytest.raises(SequenceError, match="must be under"):
        other = frame("s2", "2024-05-01T10:00:00Z", site="other")
        append(store, SITE, frames=[other], rejections=[], grid=GRID, data=data_for(other))
    with pytest.raises(SequenceError, match="neither in `data` nor in the store"):
        append(store, SITE, frames=[f1], rejections=[], grid=GRID, data={})
    assert load_manifest(store, SITE)[1] is None
    # Objects written earlier (e.g. by a previous, killed run) may be referenced without passing them again.
    for key, blob in data_for(f1).items():
        store.put(key, blob)
    assert append(store, SITE, frames=[f1], rejections=[], grid=GRID, data={}).appended == ("s1",)
    # A new scene may not reuse a visible frame's keys.
    thief = replace(frame("s9", "2024-06-01T10:00:00Z"), objects=dict(f1.objects))
    with pytest.raises(SequenceError, match="refusing to overwrite"):
        append(store, SITE, frames=[thief], rejections=[], grid=GRID, data=data_for(thief))
    assert store.get(f1.objects["ndvi"]) == b"s1:ndvi"


def test_grid_change_refused_by_append(store) -> None:
    f1, f2 = frame("s1", "2024-05-01T10:00:00Z"), frame("s2", "2024-05-11T10:00:00Z")
    append(store, SITE, frames=[f1], rejections=[], grid=GRID, data=data_for(f1))
    with pytest.raises(SequenceError, match="grid changed"):
        append(store, SITE, frames=[f2], rejections=[], grid={**GRID, "crs": "EPSG:32634"}, data=data_for(f2))
    assert not store.exists(f2.objects["ndvi"])  # refused before any data was written


def test_mark_tracked(store) -> None:
    with pytest.raises(SequenceError, match="no manifest"):
        mark_tracked(store, SITE, tracked_until="2024-05-01T10:00:00Z", clear_dirty=False)
    f1, f3 = frame("s1", "2024-05-01T10:00:00Z"), frame("s3", "2024-05-21T10:00:00Z")
    append(store, SITE, frames=[f1, f3], rejections=[], grid=GRID, data=data_for(f1, f3))
    m = mark_tracked(store, SITE, tracked_until=f3.datetime, clear_dirty=False)
    assert m.tracked_until == f3.datetime and m.revision == 2 and load_manifest(store, SITE)[0] == m
    assert mark_tracked(store, SITE, tracked_until=f3.datetime, clear_dirty=False).revision == 2  # no-op: no swap
    f2 = frame("s2", "2024-05-11T10:00:00Z")
    assert append(store, SITE, frames=[f2], rejections=[], grid=GRID, data=data_for(f2)).dirty_from == f2.datetime
    seen, _ = load_manifest(store, SITE)  # the tracker reads, re-tracks from dirty_from...
    f25 = frame("s25", "2024-05-15T10:00:00Z")  # ...while another late scene lands
    append(store, SITE, frames=[f25], rejections=[], grid=GRID, data=data_for(f25))
    m = mark_tracked(store, SITE, tracked_until=f3.datetime, clear_dirty=True, based_on=seen)
    assert m.dirty_from == f25.datetime  # not lost: the tracker never saw s25
    m = mark_tracked(store, SITE, tracked_until=f3.datetime, clear_dirty=True, based_on=m)
    assert m.dirty_from is None and load_manifest(store, SITE)[0].dirty_from is None


# --- overlapping runs and kill safety (real processes) -------------------------------------------------------

_WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.test_sequence import GRID, SITE, data_for, frame
    from scarmon.store.sequence import append
    from scarmon.store.backends import open_store
    uri, go, tag, n = sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    store = open_store(uri)
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        f = frame(f"{tag}-{i:02d}", f"2024-{1 + i % 12:02d}-{1 + i:02d}T10:00:{i:02d}Z")
        append(store, SITE, frames=[f], rejections=[], grid=GRID, data=data_for(f))
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_overlapping_runs_lose_nothing(store, tmp_path: Path) -> None:
    """Two processes append different scenes to one site at the same time, one append per scene."""
    n, go = 8, tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(REPO), store.uri, str(go), tag, str(n)],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    time.sleep(0.3)  # let both import and wait on the go file, so they really overlap
    go.write_text("go")
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    manifest, _ = load_manifest(store, SITE)
    ids = sorted(f.scene_id for f in manifest.frames)
    assert ids == sorted([f"a-{i:02d}" for i in range(n)] + [f"b-{i:02d}" for i in range(n)])
    assert manifest.revision == 2 * n  # one swap per scene: no swap overwrote another
    assert [f.sort_key for f in manifest.frames] == sorted(f.sort_key for f in manifest.frames)
    for f in manifest.frames:
        assert store.get(f.objects["ndvi"]) == f"{f.scene_id}:ndvi".encode()


_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.test_sequence import GRID, SITE, data_for, frame
    from scarmon.store.sequence import append
    from scarmon.store.backends import open_store
    store, ready = open_store(sys.argv[2]), Path(sys.argv[3])
    real_put_if = store.put_if
    def paused_put_if(key, data, **kw):   # data objects are written; the manifest swap is next
        ready.write_text("paused")
        time.sleep(60)
        return real_put_if(key, data, **kw)
    store.put_if = paused_put_if
    f = frame("late", "2024-06-01T10:00:00Z")
    append(store, SITE, frames=[f], rejections=[], grid=GRID, data=data_for(f))
""")


def test_kill_during_append_leaves_previous_manifest(store, tmp_path: Path) -> None:
    f1 = frame("s1", "2024-05-01T10:00:00Z")
    append(store, SITE, frames=[f1], rejections=[], grid=GRID, data=data_for(f1))
    before = store.get(keys.manifest(SITE))
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(REPO), store.uri, str(ready)], env=_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "child never reached the manifest swap"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    late = frame("late", "2024-06-01T10:00:00Z")
    assert store.exists(late.objects["ndvi"])  # the killed run got as far as its data objects...
    assert store.get(keys.manifest(SITE)) == before  # ...but the manifest is the previous one, intact
    manifest, _ = load_manifest(store, SITE)
    assert [f.scene_id for f in manifest.frames] == ["s1"] and "late" not in manifest.known_scene_ids()
    rep = append(store, SITE, frames=[late], rejections=[], grid=GRID, data=data_for(late))  # the next run
    assert rep.appended == ("late",) and load_manifest(store, SITE)[0].revision == 2


def test_mark_tracked_keeps_a_dirty_mark_set_while_tracking(tmp_path):
    """A correction stored while a tracker runs (mark_dirty) survives that run's mark_tracked(clear_dirty=True)."""
    from scarmon.store.backends import LocalStore
    from scarmon.store.sequence import mark_dirty, mark_tracked

    store = LocalStore(tmp_path)
    grid = {"epsg": 32647, "resolution": 2.0, "x0": 0.0, "y0": 0.0, "width": 4, "height": 4}
    frames = [
        FrameEntry(
            date=f"2022-01-0{d}",
            scene_id=f"S2A_2022010{d}_R033",
            datetime=f"2022-01-0{d}T04:00:00Z",
            item_ids=("i",),
            processing_baseline="04.00",
            coverage=1.0,
            clear_fraction=1.0,
            objects={"ndvi": f"site-a/frames/{d}.tif"},
        )
        for d in (1, 2, 3)
    ]
    append(store, "site-a", frames=frames, rejections=[], grid=grid, data={f.objects["ndvi"]: b"x" for f in frames})
    read_by_tracker, _ = load_manifest(store, "site-a")
    mark_dirty(store, "site-a", dirty_from=frames[1].datetime)  # a correction arrives mid-run
    after = mark_tracked(store, "site-a", tracked_until=frames[-1].datetime, clear_dirty=True, based_on=read_by_tracker)
    assert after.dirty_from == frames[1].datetime
    # The next run, which read the dirty mark, clears it.
    again = mark_tracked(store, "site-a", tracked_until=frames[-1].datetime, clear_dirty=True, based_on=after)
    assert again.dirty_from is None
