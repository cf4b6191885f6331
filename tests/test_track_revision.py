"""Seasonal revisions through `track_site`: winter growth onto ground seen green, held by the seasonal rule and
confirmed when the growing season finds it still bare, corrects the stored masks and series rows of the winter frames
(notes say so), equally in one run and tick by tick; the alert stage then tells the operator no later than the
confirming frame, without re-sending anything."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from scarmon.grid import site_grid
from scarmon.ingest.frames import encode_ndvi, encode_png
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import LocalStore, Store
from scarmon.store.sequence import FrameEntry, append, load_manifest
from scarmon.tracking.knowledge import decode_state
from scarmon.tracking.pipeline import CORRECTED, read_mask, read_series, track_site
from tests.test_products_support import SITE_DOC, make_site

FIRST = dt.date(2021, 6, 1)
STEP_DAYS = 12
N_FRAMES = 32  # June 2021 to early July 2022
FAILURE = dt.date(2021, 12, 10)  # a lobe fails onto the meadow east of the scar, in the dormant season
CLOUD = dt.date(2022, 1, 18)  # a frame with the lobe under (flagged) cloud: the hold goes on through it


def dates(n: int = N_FRAMES) -> list[dt.date]:
    return [FIRST + dt.timedelta(days=STEP_DAYS * i) for i in range(n)]


def lush(d: dt.date) -> bool:
    return dt.date(d.year, 4, 20) <= d <= dt.date(d.year, 10, 15)


def ndvi_of(shape: tuple[int, int], d: dt.date, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h / 2, w / 2
    scar = (xx - cx) ** 2 + (yy - cy) ** 2 <= 20**2
    lobe = (xx - cx - 34) ** 2 + (yy - cy) ** 2 <= 16**2
    ndvi = (0.75 if lush(d) else 0.4) + rng.normal(0, 0.02, size=shape)
    ndvi[scar | (lobe if d >= FAILURE else False)] = 0.05
    if abs((d - CLOUD).days) < STEP_DAYS // 2:
        ndvi[lobe] = np.nan
    return ndvi.astype(np.float32)


def append_frames(store: Store, site: Site, days: list[dt.date]) -> None:
    grid = site_grid(site.polygon, site.resolution_m)
    frames, data = [], {}
    for d in days:
        scene = f"S2A_{d:%Y%m%d}_R033"
        ndvi = ndvi_of(grid.shape, d, np.random.default_rng(d.toordinal()))  # the same frame in every tick
        nkey, vkey = f"{site.id}/frames/{d}_{scene}.tif", f"{site.id}/frames/{d}_{scene}.png"
        data[nkey] = encode_ndvi(ndvi, grid)
        data[vkey] = encode_png(np.clip((np.nan_to_num(ndvi, nan=-0.2) + 0.2) * 255, 0, 255).astype(np.uint8))
        frames.append(
            FrameEntry(
                date=d.isoformat(),
                scene_id=scene,
                datetime=f"{d}T04:17:01Z",
                item_ids=(f"S2A_MSIL2A_{d:%Y%m%d}T041701_R033_T47RKQ",),
                processing_baseline="05.10",
                coverage=1.0,
                clear_fraction=1.0,
                objects={"ndvi": nkey, "video": vkey},
            )
        )
    append(store, site.id, frames=frames, rejections=[], grid=grid.to_dict(), data=data)


def site_doc() -> Site:
    return make_site({**json.loads(json.dumps(SITE_DOC)), "recipients": {"email": ["ops@example.org"]}})


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    site = site_doc()
    store = LocalStore(tmp_path_factory.mktemp("full"))
    append_frames(store, site, dates())
    report = track_site(site, store)
    return site, store, report


def ticks(sizes=(1, 2, 3)):
    """Frame counts per tick, cycling through `sizes`, until all frames are in."""
    out, i, k = [], 0, 0
    while i < N_FRAMES:
        n = min(sizes[k % len(sizes)], N_FRAMES - i)
        out.append(dates()[i : i + n])
        i, k = i + n, k + 1
    return out


def test_a_confirmed_seasonal_hold_corrects_the_winter_masks_and_rows_but_not_the_states(full):
    site, store, report = full
    manifest, _ = load_manifest(store, site.id)
    frames = manifest.frames
    grid = manifest.site_grid
    rows = read_series(store, site.id)
    masks = [read_mask(store, keys.mask(site.id, f)) for f in frames]
    areas = [int(m.sum()) for m in masks]
    first = next(i for i, f in enumerate(frames) if f.date >= FAILURE.isoformat())
    confirm = next(i for i, r in enumerate(rows) if i > first and not r["tracker_note"])  # taken on its own frame
    assert areas[:first] == [areas[0]] * first and areas[first] > 1.5 * areas[0]  # back-filled from the failure on
    assert areas[first:] == [areas[first]] * (len(frames) - first)
    assert report.revised == [f.scene_id for f in frames[first:confirm]]
    note = f"{CORRECTED}{frames[confirm].date}: seasonal hold confirmed by the growing season"
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        assert row["area_m2"] == mask.sum() * grid.pixel_area_m2  # every row measured on the stored mask
        if i:
            assert row["change_m2"] == row["area_m2"] - rows[i - 1]["area_m2"]
        assert (note in row["tracker_note"].split("; ")) == (first <= i < confirm), row["date"]
    assert rows[first]["change_m2"] > 0 and rows[confirm]["change_m2"] == 0  # the growth is dated at the failure
    assert not rows[first]["low_confidence"]  # a correction is no reason for doubt; the cloudy frame stays flagged
    assert any(r["low_confidence"] and "of the scar under cloud" in r["low_confidence_reason"] for r in rows[first:])
    assert rows[first]["new_ground_m2"] is None or rows[first]["new_ground_m2"] > 0
    # The tracker's states stay as they were tracked (causal): the winter state's mask is the held one.
    state = decode_state(store.get(keys.tracker_state(site.id, "knowledge", frames[confirm - 2])))
    assert int(state.mask.sum()) == areas[0]


def test_tick_by_tick_equals_one_run_with_a_revision(full, tmp_path):
    site, ref, _ = full
    store = LocalStore(tmp_path)
    revised = []
    for batch in ticks():
        append_frames(store, site, batch)
        revised += track_site(site, store).revised
    assert revised  # the revision happened during the ticks, reaching back over frames tracked earlier
    frames = load_manifest(store, site.id)[0].frames
    for frame in frames:
        key = keys.mask(site.id, frame)
        assert store.get(key) == ref.get(key), frame.date
    assert json.loads(store.get(keys.series_json(site.id))) == json.loads(ref.get(keys.series_json(site.id)))
    # A re-run changes nothing, and repeats no note.
    assert track_site(site, store).tracked == []
    assert json.loads(store.get(keys.series_json(site.id))) == json.loads(ref.get(keys.series_json(site.id)))


def test_alerts_after_a_revision_tell_the_growth_by_the_confirming_tick_and_resend_nothing(full, tmp_path):
    """Tick by tick (track, alert, deliver): the alert state had stepped the winter rows as they were; when the
    growing season corrects them, the alert stage replays the corrected series, so the history an operator reads
    dates the growth at the failure, and the growth's notification goes out in that very tick. Nothing is queued
    twice, and the history and state equal those of one run over the corrected series."""
    from scarmon.alerts.history import load_state, mark, outbox, read_history, update_entry
    from scarmon.service.runner import alert_stage

    site, ref, _ = full
    store = LocalStore(tmp_path)
    queued: list[tuple[str, str]] = []  # (newest frame of the tick, event id)
    confirmed_tick = None
    for batch in ticks():
        append_frames(store, site, batch)
        if track_site(site, store).revised:
            confirmed_tick = batch[-1].isoformat()
        alert_stage(site, store)
        for entry in outbox(store, site.id):  # delivered
            for channel in list(entry.channels):
                mark(entry, channel, ok=True)
            update_entry(store, site.id, entry)
            queued.append((batch[-1].isoformat(), entry.event.id))
    assert confirmed_tick is not None
    ids = [i for _, i in queued]
    assert len(ids) == len(set(ids))  # nothing sent twice
    growth = [(t, i) for t, i in queued if i.split("_")[0] >= FAILURE.isoformat()]
    assert growth and all(t <= confirmed_tick for t, _ in growth)  # told no later than the confirming tick
    history = read_history(store, site.id)
    assert any(h["event"] == "confirmed" and FAILURE.isoformat() <= h["date"] < "2022-04-01" for h in history)
    # One alert run over the corrected series (what `refine` rebuilds) describes the same past.
    alert_stage(site, ref, rebuild=True, suppress=True, note="refine")
    assert load_state(store, site.id) == load_state(ref, site.id)
    assert {h["id"] for h in history} >= {h["id"] for h in read_history(ref, site.id)}


def test_a_live_alert_re_dated_by_a_revision_is_recorded_as_told_not_sent_again(tmp_path):
    """Stored rows, two ticks: tick 1 sees the growth live (held winter frames unchanged) and sends a confirmed
    watch; tick 2's rows date the growth at the failure (winter rows corrected, noted so) and add a larger growth
    after the correction. The replay re-dates the watch earlier: it is covered by the live one (same kind, same
    level), so it is recorded as told and not sent again; the larger growth (same kind, higher level) is sent."""
    import random

    from scarmon.alerts.history import mark, outbox, read_history, update_entry
    from scarmon.service.runner import alert_stage

    site = site_doc()
    store = LocalStore(tmp_path)
    days, live, more = dates(40), dt.date(2022, 3, 1), dt.date(2022, 5, 20)
    rng = random.Random(1)
    noise = [1 + rng.gauss(0, 0.005) for _ in days]

    def rows(n: int, grown_from: dt.date, note: str = "") -> list[dict]:
        return [
            {
                "date": d.isoformat(),
                "scene_id": f"S2A_{d:%Y%m%d}_R033",
                "area_m2": 10_000.0 * (1.4 if d >= grown_from else 1) * (2.5 if d >= more else 1) * noise[i],
                "low_confidence": False,
                "clear_fraction": 1.0,
                "tracker_note": note if note and grown_from <= d < live else "",
            }
            for i, d in enumerate(days[:n])
        ]

    sent: list[tuple[str, str, str, str]] = []  # (tick, event, level, date) of every delivered entry

    def tick(label: str, series: list[dict]) -> None:
        store.put(keys.series_json(site.id), json.dumps(series).encode())
        alert_stage(site, store)
        for entry in outbox(store, site.id):  # delivered
            for channel in list(entry.channels):
                mark(entry, channel, ok=True)
            update_entry(store, site.id, entry)
            sent.append((label, entry.event.event, entry.event.level, entry.event.date))

    n_live = next(i for i, d in enumerate(days) if d >= live) + 3
    tick("live", rows(n_live, live))
    assert [(t, e, lv) for t, e, lv, _ in sent] == [("live", "confirmed", "watch")]
    live_date = sent[0][3]
    assert live_date >= live.isoformat()

    confirm = days[n_live + 3].isoformat()  # the growing season confirms the winter hold after tick 1
    note = f"{CORRECTED}{confirm}: seasonal hold confirmed by the growing season"
    tick("revised", rows(next(i for i, d in enumerate(days) if d >= more) + 3, FAILURE, note))
    # No second message for the re-dated watch; the higher-level growth after the correction is sent.
    assert [(t, e, lv) for t, e, lv, _ in sent] == [("live", "confirmed", "watch"), ("revised", "confirmed", "alarm")]
    assert sent[1][3] >= more.isoformat()
    history = read_history(store, site.id)
    redated = [h for h in history if h["event"] == "confirmed" and h["date"] < live_date]
    assert len(redated) == 1 and redated[0]["level"] == "watch"
    assert FAILURE.isoformat() <= redated[0]["date"] < live.isoformat()  # dated where the growth happened
    assert redated[0]["notified"] is False and redated[0]["note"] == "revised"
    assert [h["date"] for h in history if h["event"] == "confirmed" and h.get("notified") is not False] == [
        live_date,
        sent[1][3],
    ]
