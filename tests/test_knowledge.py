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
    masks, _ = run([frame(scar0 | other), frame(scar1 | other)], {0: [(30, 30, 1)]})
    assert masks[0].sum() == scar0.sum() and not (masks[0] & other).any()
    assert masks[1].sum() == scar1.sum()  # followed through memory, with no prompt on frame 1


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
    f[edge & scar] = 0.25   # mixed pixels inside the true boundary lean to vegetation
    f[edge & ~scar] = 0.45  # mixed pixels outside lean further
    dark = disk(40, 68, 6)
    f[dark] = 0.3            # dark vegetation near, but apart from, the scar: below the midpoint, not low
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
    assert all(np.array_equal(a, b) for a, b in zip(full, first + rest))
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
