"""The knowledge tracker on hand-made NDVI frames: each test breaks if its rule breaks."""

import numpy as np
from scipy import ndimage

from scarmon.tracking.knowledge import KnowledgeParams, KnowledgeState, decode_state, encode_state, knowledge_step

P = KnowledgeParams()
H = W = 80


def field(background=0.6):
    rng = np.random.default_rng(0)
    return (background + rng.normal(0, 0.02, (H, W))).astype(np.float32)


def disk(cx, cy, r):
    y, x = np.ogrid[:H, :W]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def frame(scar, background=0.6, scar_ndvi=0.05):
    f = field(background)
    f[scar] = scar_ndvi
    return f


def run(frames, prompts_by_frame, state=None):
    state = state or KnowledgeState()
    masks = []
    for i, f in enumerate(frames):
        m, state = knowledge_step(state, ndvi=f, prompts=prompts_by_frame.get(i, []), params=P)
        masks.append(m)
    return masks, state


def test_prompted_component_only_and_growth_followed():
    scar0, other = disk(30, 30, 8), disk(65, 65, 5)  # other: stable bare patch, not prompted
    scar1 = disk(33, 33, 12)
    masks, state = run([frame(scar0 | other), frame(scar1 | other)], {0: [(30, 30, 1)]})
    assert masks[0].sum() == scar0.sum() and not (masks[0] & other).any()
    # A x2.2 lobe along the scar's edge is growth, taken at once; followed through memory, no prompt on frame 1.
    assert masks[1].sum() == scar1.sum() and state.note == ""


def test_a_jump_not_compact_with_the_edge_waits_for_a_second_frame():
    scar, lobe = disk(30, 30, 8), disk(47, 30, 9)  # touches the scar over a short stretch: a missed cumulus, or not
    grown = frame(scar | lobe)
    masks, state = run([frame(scar), grown], {0: [(30, 30, 1)]})
    assert masks[1].sum() == scar.sum() and "a jump awaiting a confirming frame" in state.note
    m, state = knowledge_step(state, ndvi=grown, prompts=[], params=P)
    assert m.sum() == (scar | lobe).sum() and state.note == ""  # still there on the next frame: confirmed
    masks, _ = run_with(KnowledgeParams(guard=False), [frame(scar), grown], {0: [(30, 30, 1)]})
    assert masks[1].sum() == (scar | lobe).sum()  # without the guard it is taken at once


def test_negative_prompt_excludes_adjacent_outcrop_forever():
    scar, outcrop = disk(30, 40, 8), disk(48, 40, 8)  # touching components: one low-NDVI blob
    masks, _ = run([frame(scar | outcrop)] * 3, {0: [(30, 40, 1), (50, 40, 0)]})
    for m in masks:
        assert m[40, 30] and not m[40, 52] and m.sum() < (scar | outcrop).sum() * 0.75


def test_water_is_never_scar():
    scar = disk(30, 30, 8)
    f = frame(scar)
    f[:, 36:40] = -0.4  # a river touching the scar
    (m,), _ = run([f], {0: [(30, 30, 1)]})
    assert not m[:, 36:40].any() and m[30, 30]


def test_clouds_keep_previous_mask_and_lush_season_raises_threshold():
    scar = disk(30, 30, 10)
    cloudy = frame(scar)
    cloudy[20:40, 20:40] = np.nan
    lush = frame(scar, background=0.75, scar_ndvi=0.13)  # sparse regrowth on the scar in summer
    masks, _ = run([frame(scar), cloudy, lush], {0: [(30, 30, 1)]})
    assert masks[1].sum() == scar.sum()
    assert masks[2].sum() == scar.sum()
    dry = frame(scar, background=0.35, scar_ndvi=0.13)  # not lush: 0.13 alone is not a scar core
    masks, _ = run([dry], {0: [(30, 30, 1)]})
    assert masks[0].sum() == 0
    # ...but ground that was scar and stays well below its surroundings is kept (shoulder seasons).
    masks, _ = run([frame(scar), dry], {0: [(30, 30, 1)]})
    assert masks[1].sum() == scar.sum()


def test_boundary_band_of_mixed_pixels_is_recovered_without_leaking():
    scar = disk(40, 40, 12)
    f = frame(scar)
    edge = ndimage.binary_dilation(scar, iterations=2) & ~ndimage.binary_erosion(scar, iterations=2)
    f[edge & scar] = 0.25  # mixed pixels inside the true boundary lean to vegetation
    f[edge & ~scar] = 0.45  # mixed pixels outside lean further
    dark = disk(40, 68, 6)
    f[dark] = 0.3  # dark vegetation near, but apart from, the scar: below the midpoint, not low
    (m,), _ = run([f], {0: [(40, 40, 1)]})
    assert m.sum() == scar.sum() and not (m & dark).any()


def test_revegetated_scar_drops_out():
    scar = disk(30, 30, 10)
    healed = frame(np.zeros((H, W), bool))
    masks, _ = run([frame(scar), healed], {0: [(30, 30, 1)]})
    assert masks[0].sum() == scar.sum() and masks[1].sum() == 0
    dormant = frame(np.zeros((H, W), bool), background=0.38)  # healed, in winter: as dark as a shoulder-season scar
    masks, _ = run([frame(scar, background=0.38), dormant], {0: [(30, 30, 1)]})
    assert masks[0].sum() == scar.sum() and masks[1].sum() == 0


def test_resume_equals_full_run_and_state_round_trip():
    frames = [frame(disk(30, 30, 6 + i)) for i in range(6)]
    full, _ = run(frames, {0: [(30, 30, 1), (70, 70, 0)]})
    first, state = run(frames[:3], {0: [(30, 30, 1), (70, 70, 0)]})
    rest, _ = run(frames[3:], {}, decode_state(encode_state(state)))
    assert all(np.array_equal(a, b) for a, b in zip(full, first + rest, strict=True))
    assert len(encode_state(state)) < 4000  # bounded: two packed masks, whatever the history


def test_positive_click_overrides_exclusion_and_negative_click_removes_spot():
    scar = disk(30, 30, 8)
    masks, state = run([frame(scar)], {0: [(30, 30, 1), (34, 30, 0)]})
    assert not masks[0][30, 34]
    m, _ = knowledge_step(state, ndvi=frame(scar), prompts=[(34, 30, 1)], params=P)
    assert m[30, 34]


def test_box_prompt_selects_and_bounds_the_scar():
    scar, other = disk(30, 30, 8), disk(65, 65, 6)
    box = [(18, 18, 2), (42, 42, 3)]  # corners, as SAM 2 encodes boxes
    masks, _ = run([frame(scar | other), frame(scar | other)], {0: box})
    assert masks[0].sum() == scar.sum() and not (masks[0] & other).any()
    assert masks[1].sum() == scar.sum()  # followed through memory afterwards


# --- Issue 10: seasonal knowledge, overgrowth guard, prompts on their own date ---------------------------------------

RING = disk(30, 30, 24) & ~disk(30, 30, 10)  # a rim or deciduous belt around the scar (28 m at 2 m)


def test_ground_seen_green_last_season_is_not_scar_in_the_dormant_season_unless_it_stays_low():
    scar = disk(30, 30, 10)
    summer = frame(scar, background=0.75, scar_ndvi=0.13)
    summer[RING] = 0.45  # sparse rim at peak green
    winter = frame(scar, background=0.38)
    winter[RING] = 0.06  # the same rim, dormant: as low as the scar
    masks, state = run([summer, winter, winter], {0: [(30, 30, 1)]})
    assert masks[0].sum() == scar.sum()
    assert masks[1].sum() == scar.sum() and masks[2].sum() == scar.sum() and state.note == ""
    seasonal_only = KnowledgeParams(guard=False)  # the seasonal rule alone holds it...
    masks, _ = run_with(seasonal_only, [summer, winter, winter], {0: [(30, 30, 1)]})
    assert masks[2].sum() == scar.sum()
    # ...and without a growing season seen first, nothing says the ring greens up: it is taken.
    masks, _ = run_with(seasonal_only, [frame(scar, background=0.38), winter], {0: [(30, 30, 1)]})
    assert masks[1].sum() > scar.sum() + 0.9 * RING.sum()
    # The ring stays low through the next growing season: it is scar now, and no longer 'green' after it.
    lush_low = frame(scar | RING, background=0.75, scar_ndvi=0.13)
    later, state = knowledge_step(state, ndvi=lush_low, prompts=[], params=P)
    later, state = knowledge_step(state, ndvi=lush_low, prompts=[], params=P)  # a jump: confirmed on the 2nd frame
    assert later.sum() == (scar | RING).sum()
    after, _ = knowledge_step(state, ndvi=frame(scar | RING, background=0.38), prompts=[], params=P)
    assert after.sum() == (scar | RING).sum()
    # With the seasonal rule off, the dormant rim is taken as in the first case.
    masks, _ = run_with(KnowledgeParams(seasonal=False, guard=False), [summer, winter], {0: [(30, 30, 1)]})
    assert masks[1].sum() > scar.sum() + 0.9 * RING.sum()


def run_with(params, frames, prompts_by_frame):
    state, masks = KnowledgeState(), []
    for i, f in enumerate(frames):
        m, state = knowledge_step(state, ndvi=f, prompts=prompts_by_frame.get(i, []), params=params)
        masks.append(m)
    return masks, state


def test_new_area_next_to_flagged_cloud_is_held_and_said():
    scar = disk(30, 30, 10)
    edge = frame(scar)
    edge[30:50, 38:60] = 0.05  # unflagged cloud edge touching the scar: low NDVI...
    edge[30:50, 48:60] = np.nan  # ...next to the part SCL flagged
    masks, state = run([frame(scar), edge], {0: [(30, 30, 1)]})
    assert masks[1].sum() == scar.sum()  # the previous extent is kept there
    assert "next to cloud or snow" in state.note
    m, state = knowledge_step(state, ndvi=frame(scar), prompts=[], params=P)
    assert m.sum() == scar.sum() and state.note == "" and state.pending is None  # nothing left pending


def test_new_area_where_snow_just_was_is_held_until_it_has_been_seen_clear():
    scar = disk(30, 30, 10)
    snowy = frame(scar)
    snowy[:, 36:] = np.nan  # snow flagged on the scar's east side
    melt = frame(scar | (disk(30, 30, 14) & (np.arange(W) >= 36)[None, :]))  # wet, patchy ground where it was
    masks, state = run([frame(scar), snowy, melt], {0: [(30, 30, 1)]})
    assert masks[2].sum() == scar.sum() and "where cloud or snow just was" in state.note
    unguarded, _ = run_with(KnowledgeParams(guard=False), [frame(scar), snowy, melt], {0: [(30, 30, 1)]})
    assert unguarded[2].sum() > scar.sum()


def test_a_missed_cloud_jump_is_never_confirmed():
    scar = disk(30, 30, 8)
    cumulus = frame(scar | disk(45, 30, 9))  # an unflagged cumulus touching the scar, one frame only
    masks, state = run([frame(scar), cumulus, frame(scar), frame(scar)], {0: [(30, 30, 1)]})
    assert all(m.sum() == scar.sum() for m in masks)
    assert state.pending is None


def test_tracker_starts_on_the_prompt_date_and_tracks_back_to_before_the_scar_existed():
    from scarmon.tracking.trackers import FrameData, KnowledgeTracker

    scar = disk(40, 40, 9)
    ndvis = [field(), field(), frame(scar), frame(scar), frame(scar | disk(44, 44, 10))]
    frames = [FrameData(i, f, np.zeros((H, W), np.uint8)) for i, f in enumerate(ndvis)]
    tracker = KnowledgeTracker(P)
    masks, states = tracker.run(frames, {2: [(40, 40, 1)]}, {}, resume=None)
    assert [int(m.sum()) for m in masks] == [0, 0, scar.sum(), scar.sum(), (scar | disk(44, 44, 10)).sum()]
    assert tracker.notes == {} and tracker.warnings == []
    assert states[:2] == [b"", b""] and all(states[2:])  # nothing before the prompt can be resumed from
    # Moved onto frame 0 (the old way) the same prompt lands on intact vegetation and finds nothing, ever.
    masks, _ = tracker.run(frames, {0: [(40, 40, 1)]}, {}, resume=None)
    assert all(m.sum() == 0 for m in masks) and "no low-NDVI ground" in tracker.warnings[0]


def test_resume_equals_full_run_with_seasons_clouds_and_held_jumps():
    scar, bigger = disk(30, 30, 8), disk(33, 33, 13)
    summer = frame(scar, background=0.75, scar_ndvi=0.13)
    summer[RING] = 0.45
    winter = frame(scar, background=0.38)
    winter[RING] = 0.06
    cloudy = frame(bigger)
    cloudy[50:, :] = np.nan
    frames = [summer, summer, winter, cloudy, frame(bigger), frame(bigger), winter]
    prompts = {0: [(30, 30, 1)]}
    full, end = run(frames, prompts)
    for cut in range(1, len(frames)):
        first, state = run(frames[:cut], prompts)
        rest, end2 = run(frames[cut:], {}, decode_state(encode_state(state)))
        assert all(np.array_equal(a, b) for a, b in zip(full, first + rest, strict=True)), cut
        assert end2.note == end.note and np.array_equal(end2.unseen_age, end.unseen_age)
    assert any(m.sum() != full[0].sum() for m in full)  # the sequence does change the mask


def test_seasonal_hold_confirmed_by_the_growing_season_is_reported_as_a_revision_of_the_winter_frames():
    """Winter growth onto ground seen green is held; when the growing season finds it still bare the step reports
    it, with how many frames back it was already scar: only since it was continuously low (or unseen)."""
    scar = disk(30, 30, 10)
    lobe = disk(44, 30, 8) & ~scar  # a winter failure onto a meadow seen green last summer
    meadow = disk(44, 30, 8) | disk(16, 30, 8)  # the western lobe greens up again in spring
    summer = frame(scar, background=0.75, scar_ndvi=0.13)
    summer[meadow & ~scar] = 0.7
    winter = frame(scar | lobe, background=0.38)  # the lobe as low as the scar, from the 2nd winter frame
    green_gap = winter.copy()
    west = disk(16, 30, 8) & ~scar
    green_gap[west] = 0.05  # the western meadow is low on the 3rd winter frame...
    cloudy = winter.copy()
    cloudy[20:40, 36:56] = np.nan  # ...and the lobe unseen on the 4th (the hold goes on)
    spring = frame(scar | lobe, background=0.75, scar_ndvi=0.13)
    frames = [summer, frame(scar, background=0.38), winter, green_gap, cloudy, winter, spring, spring]
    masks, state = run(frames, {0: [(30, 30, 1)]})
    assert all(m.sum() == scar.sum() for m in masks[:6])  # held all winter, by the seasonal rule
    assert masks[7].sum() == (scar | lobe).sum()  # taken in the growing season (a jump: on its second frame)
    revisions = []
    st = KnowledgeState()
    for i, f in enumerate(frames):
        _, st = knowledge_step(st, ndvi=f, prompts=[(30, 30, 1)] if i == 0 else [], params=P)
        revisions.append(st.revision)
    assert all(r is None for r in revisions[:7])
    rev = revisions[7]
    taken = masks[7] & ~masks[6]
    assert np.array_equal(rev > 0, taken) and (rev[taken] == 5).all()  # frames 2-6: low, low, unseen, low, low
    assert state.held_age is None or not (state.held_age[west] > 0).any()  # the west meadow greened: hold ended
    # Without a green growing season the western meadow's winter dip is never taken nor revised.
    assert not masks[3][west].any() and not (rev[west] > 0).any()
    # The hold survives a state round trip; states written before it existed decode without it.
    mid_masks, mid = run(frames[:5], {0: [(30, 30, 1)]})
    back = decode_state(encode_state(mid))
    assert back.held_age is not None and np.array_equal(back.held_age, mid.held_age) and back.held_age.max() == 3
    rest, end = run(frames[5:], {}, back)
    assert np.array_equal(end.revision, rev)
    assert all(np.array_equal(a, b) for a, b in zip(masks, mid_masks + rest, strict=True))


def test_states_without_seasonal_holds_still_decode():
    import io

    state = KnowledgeState(mask=disk(30, 30, 5), frames=3)
    with np.load(io.BytesIO(encode_state(state))) as z:
        old = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez_compressed(buf, **old)
    back = decode_state(buf.getvalue())
    assert back.held_age is None and back.revision is None and np.array_equal(back.mask, state.mask)


def test_a_seasonal_hold_reaches_back_one_dormant_season_at_most():
    """Ground held in winter that stays low through a growing season without becoming scar (not connected to it)
    is dropped from the holds when the next dormant season begins: no revision reaches back further."""
    scar, patch = disk(20, 20, 8), disk(60, 60, 8)  # a bare patch far from the scar, green last summer
    summer = frame(scar, background=0.75, scar_ndvi=0.13)
    winter = frame(scar | patch, background=0.38)
    summer_low = frame(scar | patch, background=0.75, scar_ndvi=0.13)
    masks, state = run([summer, winter, winter, summer_low, summer_low], {0: [(20, 20, 1)]})
    assert all(m.sum() == scar.sum() for m in masks) and state.revision is None
    assert (state.held_age[patch] == 4).all()  # held since the first winter frame, through the summer
    _, state = knowledge_step(state, ndvi=winter, prompts=[], params=P)
    assert state.held_age is None or not state.held_age[patch].any()  # a new dormant season: dropped
