"""Replacing a frame by a newer processing of the same acquisition: a compare-and-swap on the stored entry that
keeps the replaced entry (and its objects), marks tracking dirty from the frame, loses no concurrent write; old
manifests load and new ones round-trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from scarmon.store import keys
from scarmon.store.backends import open_store
from scarmon.store.sequence import (
    FORMAT,
    DeclinedReprocessing,
    FrameEntry,
    Manifest,
    Replacement,
    SequenceError,
    Superseded,
    append,
    load_manifest,
    mark_dirty,
    mark_tracked,
    merge,
)

GRID = {"crs": "EPSG:32633", "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0], "shape": [64, 64]}
SITE = "slide-1"
AT = "2024-06-01T00:00:00Z"


def frame(scene: str, when: str, baseline: str = "04.00") -> FrameEntry:
    base = keys.frame_base(SITE, when[:10], scene, None if baseline == "04.00" else baseline)
    return FrameEntry(
        date=when[:10],
        scene_id=scene,
        datetime=when,
        item_ids=(f"S2A_{scene}_N{baseline}",),
        processing_baseline=baseline,
        coverage=1.0,
        clear_fraction=0.9 if baseline == "04.00" else 0.95,
        objects={"ndvi": f"{base}.tif", "video": f"{base}.png"},
    )


def newer(f: FrameEntry, baseline: str = "05.11") -> FrameEntry:
    """The same acquisition from a newer processing: a datetime a few seconds off (its items'), keys of its own."""
    g = frame(f.scene_id, f.datetime, baseline)
    return replace(g, datetime=f.datetime.replace(":00Z", ":09Z"))


def data_for(*frames: FrameEntry) -> dict[str, bytes]:
    return {
        key: f"{f.scene_id}:{f.processing_baseline}:{role}".encode() for f in frames for role, key in f.objects.items()
    }


F1, F2, F3 = (frame(f"s{i}", f"2024-05-{i}1T10:00:00Z") for i in (0, 1, 2))


def base_manifest(tracked_until: str | None = F2.datetime) -> Manifest:
    m, _ = merge(Manifest.empty(SITE), frames=[F1, F2, F3], rejections=[], grid=GRID)
    return replace(m, tracked_until=tracked_until)


# --- pure merge ---------------------------------------------------------------------------------------------------


def test_replacement_swaps_the_entry_keeps_the_old_one_and_marks_dirty() -> None:
    m = base_manifest()
    new = newer(F1)
    m2, rep = merge(m, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, new, AT)])
    got = m2.frame(F1.scene_id)
    assert got == replace(new, datetime=F1.datetime)  # same scene id, date and datetime; the rest is new
    assert [f.scene_id for f in m2.frames] == ["s0", "s1", "s2"] and m2.frames[1:] == m.frames[1:]
    assert m2.superseded == (Superseded(F1, AT, "05.11"),) and m2.revision == m.revision + 1
    assert rep.replaced == rep.replaced_tracked == ("s0",) and rep.changed and rep.appended == ()
    assert m2.dirty_from == rep.dirty_from == F1.datetime
    # The same replacement again (a second run, or a retry after the swap): nothing changes.
    m3, rep = merge(m2, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, new, AT)])
    assert m3 is m2 and rep.not_replaced == ("s0",) and not rep.changed
    # A run that read the manifest before the replacement offers another one for the old entry: ignored.
    m4, rep = merge(m2, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, newer(F1, "05.12"), AT)])
    assert m4 is m2 and rep.not_replaced == ("s0",)
    # A replacement keeps an earlier dirty_from; a frame tracking has not reached yet does not set it.
    m5, rep = merge(
        replace(m, dirty_from="2024-05-01T00:00:00Z"),
        frames=[],
        rejections=[],
        grid=GRID,
        replacements=[Replacement(F2, newer(F2), AT)],
    )
    assert m5.dirty_from == "2024-05-01T00:00:00Z" and rep.replaced_tracked == ("s1",)
    m6, rep = merge(m, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F3, newer(F3), AT)])
    assert rep.replaced == ("s2",) and rep.replaced_tracked == () and m6.dirty_from is None
    m7, rep = merge(
        base_manifest(None), frames=[], rejections=[], grid=GRID, replacements=[Replacement(F3, newer(F3), AT)]
    )
    assert rep.replaced == ("s2",) and m7.dirty_from is None  # nothing tracked yet


def test_replacement_is_refused_when_it_would_reuse_a_referenced_object() -> None:
    m = base_manifest()
    same_keys = replace(newer(F1), objects=dict(F1.objects))
    with pytest.raises(SequenceError, match="keys of its own"):
        merge(m, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, same_keys, AT)])
    m2, _ = merge(m, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, newer(F1), AT)])
    back = replace(newer(m2.frame("s0"), "05.12"), objects=dict(F1.objects))  # the superseded entry's keys
    with pytest.raises(SequenceError, match="keys of its own"):
        merge(m2, frames=[], rejections=[], grid=GRID, replacements=[Replacement(m2.frame("s0"), back, AT)])
    with pytest.raises(SequenceError, match="more than once"):
        merge(m, frames=[newer(F1)], rejections=[], grid=GRID, replacements=[Replacement(F1, newer(F1), AT)])
    with pytest.raises(SequenceError, match="keep the scene id"):
        Replacement(F1, newer(F2), AT)


def test_declined_reprocessing_is_recorded_once_per_frame_and_dropped_on_replacement() -> None:
    m = base_manifest()
    d1 = DeclinedReprocessing("s0", "05.11", ("a",), "clear fraction 0.10 < 0.70", AT)
    m2, rep = merge(m, frames=[], rejections=[], grid=GRID, declined=[d1])
    assert m2.declined("s0") == d1 and rep.declined == ("s0",) and m2.dirty_from is None and m2.frames == m.frames
    assert merge(m2, frames=[], rejections=[], grid=GRID, declined=[d1])[0] is m2  # the same again: no swap
    d2 = replace(d1, item_ids=("a", "b"), reason="coverage 0.50 < min_coverage 0.90")
    m3, _ = merge(m2, frames=[], rejections=[], grid=GRID, declined=[d2])
    assert m3.declined_reprocessings == (d2,)  # the latest per scene
    unknown = replace(d1, scene_id="nope")
    assert merge(m3, frames=[], rejections=[], grid=GRID, declined=[unknown])[0] is m3  # not a frame: ignored
    m4, _ = merge(m3, frames=[], rejections=[], grid=GRID, replacements=[Replacement(F1, newer(F1), AT)])
    assert m4.declined_reprocessings == ()


# --- the manifest document ----------------------------------------------------------------------------------------

OLD_MANIFEST = {  # as scarmon wrote it before frames could be replaced
    "format": FORMAT,
    "site_id": SITE,
    "grid": GRID,
    "revision": 3,
    "tracked_until": "2024-05-01T10:00:00Z",
    "dirty_from": None,
    "frames": [
        {
            "date": "2024-05-01",
            "scene_id": "s0",
            "datetime": "2024-05-01T10:00:00Z",
            "item_ids": ["S2A_x"],
            "processing_baseline": "04.00",
            "coverage": 1.0,
            "clear_fraction": 0.9,
            "objects": {"ndvi": "slide-1/frames/2024-05-01_s0.tif", "video": "slide-1/frames/2024-05-01_s0.png"},
        }
    ],
    "rejections": [],
}


def test_old_manifests_load_and_new_ones_round_trip() -> None:
    old = Manifest.from_json_bytes(json.dumps(OLD_MANIFEST).encode(), site_id=SITE, where="test")
    assert old.superseded == () and old.declined_reprocessings == () and old.frame("s0").processing_baseline == "04.00"
    raw = old.to_json_bytes()
    assert "superseded" not in json.loads(raw) and "declined_reprocessings" not in json.loads(raw)  # as before
    m, _ = merge(
        base_manifest(),
        frames=[],
        rejections=[],
        grid=GRID,
        replacements=[Replacement(F1, newer(F1), AT)],
        declined=[DeclinedReprocessing("s1", "05.11", ("a",), "clear fraction 0.10 < 0.70", AT)],
    )
    m, _ = merge(
        m, frames=[], rejections=[], grid=GRID, replacements=[Replacement(m.frame("s0"), newer(F1, "05.12"), AT)]
    )
    raw = m.to_json_bytes()
    back = Manifest.from_json_bytes(raw, site_id=SITE, where="test")
    assert back == m and back.to_json_bytes() == raw
    assert [(s.frame.processing_baseline, s.by_processing_baseline) for s in back.superseded] == [
        ("04.00", "05.11"),
        ("05.11", "05.12"),
    ]
    doc = json.loads(raw)
    doc["superseded"][0]["replaced_at"] = "yesterday"
    with pytest.raises(SequenceError, match="malformed.*replaced_at"):
        Manifest.from_json_bytes(json.dumps(doc).encode(), site_id=SITE, where="test")


# --- against stores -----------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_uri"))


def test_append_replacement_writes_new_objects_and_keeps_the_old_ones(store) -> None:
    append(store, SITE, frames=[F1, F2], rejections=[], grid=GRID, data=data_for(F1, F2))
    mark_tracked(store, SITE, tracked_until=F2.datetime, clear_dirty=True)
    new = newer(F1)
    rep = append(
        store, SITE, frames=[], rejections=[], grid=GRID, data=data_for(new), replacements=[Replacement(F1, new, AT)]
    )
    assert rep.replaced == ("s0",) and rep.dirty_from == F1.datetime
    m, _ = load_manifest(store, SITE)
    assert m.frame("s0").objects == new.objects and m.superseded[0].frame == F1 and m.dirty_from == F1.datetime
    for f in (F1, new, F2):
        for role, key in f.objects.items():
            assert store.get(key) == f"{f.scene_id}:{f.processing_baseline}:{role}".encode()
    # Offering it again writes nothing; a replacement reusing a referenced key is refused before any write.
    before = store.get_with_tag(keys.manifest(SITE))
    again = append(
        store, SITE, frames=[], rejections=[], grid=GRID, data=data_for(new), replacements=[Replacement(F1, new, AT)]
    )
    assert again.not_replaced == ("s0",) and store.get_with_tag(keys.manifest(SITE)) == before
    thief = replace(newer(F2), objects=dict(F1.objects))
    with pytest.raises(SequenceError):
        append(
            store,
            SITE,
            frames=[],
            rejections=[],
            grid=GRID,
            data={k: b"overwritten" for k in thief.objects.values()},
            replacements=[Replacement(F2, thief, AT)],
        )
    assert store.get(F1.objects["ndvi"]) == b"s0:04.00:ndvi"


class RacingStore:
    """A real store whose first manifest swap loses: just before it, `other` (another run) changes the manifest."""

    def __init__(self, inner, other) -> None:
        self.inner, self.other, self.conflicts = inner, other, 0
        self.uri = inner.uri

    def put_if(self, key, data, **kw):
        if self.other is not None:
            other, self.other = self.other, None
            other(self.inner)
            self.conflicts += 1
        return self.inner.put_if(key, data, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_racing_runs_lose_no_write(store) -> None:
    append(store, SITE, frames=[F1, F2], rejections=[], grid=GRID, data=data_for(F1, F2))
    new = newer(F1)

    def other_appends(inner) -> None:
        append(inner, SITE, frames=[F3], rejections=[], grid=GRID, data=data_for(F3))

    racing = RacingStore(store, other_appends)
    rep = append(
        racing, SITE, frames=[], rejections=[], grid=GRID, data=data_for(new), replacements=[Replacement(F1, new, AT)]
    )
    m, _ = load_manifest(store, SITE)
    assert racing.conflicts == 1 and rep.replaced == ("s0",) and m.revision == 3
    assert [f.scene_id for f in m.frames] == ["s0", "s1", "s2"] and m.frame("s0").objects == new.objects
    # Two runs replacing the same frame at once: one replacement, one superseded record.
    newer2 = newer(F2)

    def other_replaces(inner) -> None:
        append(
            inner,
            SITE,
            frames=[],
            rejections=[],
            grid=GRID,
            data=data_for(newer2),
            replacements=[Replacement(F2, newer2, AT)],
        )

    racing = RacingStore(store, other_replaces)
    rep = append(
        racing,
        SITE,
        frames=[],
        rejections=[],
        grid=GRID,
        data=data_for(newer2),
        replacements=[Replacement(F2, newer2, "2024-06-02T00:00:00Z")],
    )
    m, _ = load_manifest(store, SITE)
    assert racing.conflicts == 1 and rep.replaced == () and rep.not_replaced == ("s1",)
    assert [(s.frame.scene_id, s.replaced_at) for s in m.superseded] == [("s0", AT), ("s1", AT)]


def test_mark_tracked_keeps_a_replacement_made_while_tracking(store) -> None:
    append(store, SITE, frames=[F1, F2], rejections=[], grid=GRID, data=data_for(F1, F2))
    mark_tracked(store, SITE, tracked_until=F2.datetime, clear_dirty=True)
    read_by_tracker = mark_dirty(store, SITE, dirty_from=F1.datetime)  # the tracker re-tracks from s0 (a correction)
    new = newer(F1)  # replaced while the tracker works on the old processing: dirty_from does not move
    append(
        store, SITE, frames=[], rejections=[], grid=GRID, data=data_for(new), replacements=[Replacement(F1, new, AT)]
    )
    after = mark_tracked(store, SITE, tracked_until=F2.datetime, clear_dirty=True, based_on=read_by_tracker)
    assert after.dirty_from == F1.datetime
    assert mark_tracked(store, SITE, tracked_until=F2.datetime, clear_dirty=True, based_on=after).dirty_from is None
