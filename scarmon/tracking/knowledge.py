"""The weight-free knowledge tracker: NDVI threshold → prompt/memory-anchored components → temporal consistency.

Pure functions of arrays. It is the paper's "knowledge-guided" prior turned into a tracker that needs no trained
weights: a scar is low-NDVI ground connected to what was scar before (or to a positive prompt), never water, never
the stable bare ground a negative prompt marks. Its state is the previous mask, the excluded region and a few
per-pixel layers (seasonal record and holds, frames since last unseen, ground held for a second look), so it resumes
at a cost independent of the history length, and equals a full re-run exactly.

What one frame cannot be trusted with (issue 10):

- Seasonal knowledge. NDVI alone cannot tell a seasonally bare rim or a leafless deciduous forest from new scar in
  winter: both are as low as bare soil. Per-pixel phenology from the site's own clear frames can: ground seen green
  in the last growing season (and not scar-low later in it) is not taken in the dormant season, except as a band of
  creep along the scar's edge (`creep_px`). The trade: scar growth onto vegetation wider than that band in winter (a
  winter failure, fast creep after a long cloudy gap) is detected only when the growing season shows the ground still
  bare, i.e. a detection delay of up to a few months in winter, against a false growth of the whole rim or forest
  edge on every winter frame. Ground held that way and still low (or unseen) when the growing season takes it
  was scar all along: the step reports a revision (`observe_held`) and `track_site` ORs it into the stored masks
  of the frames since the hold began (at most one dormant season back), re-measures their series rows and notes
  the correction on them. The tracker's own states stay causal: they are not rewritten.
- Overgrowth guard. New area next to flagged cloud or snow (where SCL misses thin edges and partial snow), where
  cloud or snow just was, or a piece jumping away from the scar, is held: the mask keeps its previous extent there,
  the frame is flagged with the reason, and a jump is taken when the next frame shows the same ground (one frame
  of delay for a failure; a missed cloud never comes back at the same place).
- Brightness. Cloud and snow are bright in red and NIR, soil is not; this tracker sees NDVI only. The spectral test
  runs at ingestion (`radiometry.bright_mask` on B04/B08, site setting `bright_red_min`): bright cloud and snow SCL
  missed are NaN in the stored NDVI and 0 in the video frames, "not observed" for this tracker and SAM 2 alike, and
  the guard holds new area next to them. Their thin, darker edges stay observed: the guard is what holds those.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from scarmon import defaults

Point = tuple[float, float, int]  # (col, row, label) on the site grid


@dataclass(frozen=True)
class KnowledgeParams:
    threshold: float = defaults.NDVI_THRESHOLD
    lush_raise: float = defaults.LUSH_SEASON_THRESHOLD_RAISE
    lush_background: float = defaults.LUSH_BACKGROUND_NDVI
    water_max: float = defaults.WATER_NDVI_MAX
    min_overlap: float = defaults.MIN_MEMORY_OVERLAP
    open_px: int = defaults.OPEN_RADIUS_PX
    grow_px: int = defaults.BOUNDARY_GROW_PX
    max_weak_raise: float = defaults.MAX_WEAK_RAISE
    min_contrast: float = defaults.MIN_SCAR_CONTRAST
    seasonal: bool = True  # per-pixel phenology: no dormant-season growth onto ground seen green
    green_ndvi: float = defaults.SEASONAL_GREEN_NDVI
    guard: bool = True  # overgrowth guard: hold doubtful new area, say why
    guard_near_px: int = defaults.GUARD_NEAR_UNSEEN_PX
    guard_memory: int = defaults.GUARD_RECENT_FRAMES
    jump_px: int = defaults.GUARD_JUMP_PX
    jump_min_px: int = defaults.GUARD_JUMP_MIN_PX
    flag_pct: float = defaults.GUARD_FLAG_PCT
    creep_px: int = defaults.SEASONAL_CREEP_PX
    compact_contact: float = defaults.GUARD_COMPACT_CONTACT


@dataclass(frozen=True)
class KnowledgeState:
    mask: np.ndarray | None = None  # the last frame's mask (the tracker's memory)
    exclusion: np.ndarray | None = None  # stable bare ground / water marked by negative prompts
    anchors: np.ndarray | None = None  # every positive click so far: where the scar certainly is
    frames: int = 0  # frames tracked so far (for people, not for the logic)
    green: np.ndarray | None = None  # seen green (NDVI >= green_ndvi) on its last clear growing-season frame
    unseen_age: np.ndarray | None = None  # frames since the pixel was last not observed (cloud, snow), capped
    pending: np.ndarray | None = None  # new area held on an earlier frame, awaiting a clear confirmation
    note: str = ""  # why this frame's new area was held ("" when none was)
    lush: bool = False  # the last frame was a growing-season frame
    held_age: np.ndarray | None = None  # uint16: frames the pixel has been held by the seasonal rule, low or unseen
    revision: np.ndarray | None = None  # uint16, this frame only: held ground taken now, scar on that many frames back


def is_lush(ndvi: np.ndarray, params: KnowledgeParams, prior: np.ndarray | None) -> bool:
    """A growing-season frame: the median NDVI of the ground outside the scar reaches `lush_background`. Read off
    the frame itself, so it works in both hemispheres and in odd years."""
    background = ndvi[np.isfinite(ndvi) & ~(prior if prior is not None else np.zeros(ndvi.shape, bool))]
    return bool(background.size and float(np.median(background)) >= params.lush_background)


def frame_threshold(ndvi: np.ndarray, params: KnowledgeParams, prior: np.ndarray | None) -> float:
    """The paper raises the threshold a little in lush seasons, when sparse regrowth lifts the scar's NDVI."""
    return params.threshold + params.lush_raise if is_lush(ndvi, params, prior) else params.threshold


def candidates(ndvi: np.ndarray, threshold: float, params: KnowledgeParams) -> np.ndarray:
    """Bare ground: NDVI in (water_max, threshold]."""
    out: np.ndarray = np.isfinite(ndvi) & (ndvi <= threshold) & (ndvi > params.water_max)
    return out


def despeckle(mask: np.ndarray, radius: int) -> np.ndarray:
    """A small opening removes isolated low-NDVI pixels (noise) before components are formed."""
    return ndimage.binary_opening(mask, structure=_disk(radius)) if radius > 0 else mask


def exclusion_region(ndvi: np.ndarray, negatives: list[Point], anchors: np.ndarray, threshold: float) -> np.ndarray:
    """Low-NDVI ground (or water) under negative prompts: stable ground that must never be scar.

    A component that also holds scar anchors (positive clicks so far) is split: only its pixels nearer to a
    negative prompt than to an anchor are excluded, so a negative click inside the scar cuts off the part of it
    that lies on the click's side, in this frame and every later one.
    """
    low = np.isfinite(ndvi) & (ndvi <= threshold)
    labels, _ = ndimage.label(low, structure=np.ones((3, 3)))
    ids = {labels[r, c] for c, r in _pixels(negatives, ndvi.shape)} - {0}
    region = np.isin(labels, list(ids)) if ids else np.zeros(ndvi.shape, bool)
    if ids and (anchors & region).any():
        nearer_negative = ndimage.distance_transform_edt(
            ~_spots(negatives, ndvi.shape, 0)
        ) < ndimage.distance_transform_edt(~anchors)
        region &= nearer_negative
    return ndimage.binary_dilation(region, iterations=1) if region.any() else region


def knowledge_step(
    state: KnowledgeState, *, ndvi: np.ndarray, prompts: list[Point], params: KnowledgeParams
) -> tuple[np.ndarray, KnowledgeState]:
    """One frame: (prior state, new frame) → (mask, new state).

    On top of the threshold → anchored components → boundary chain (`_track`), two rules of what a single frame
    cannot be trusted with: in the dormant season the scar does not grow onto ground that was green in the last
    growing season (`seasonal_block`), and new area that lies next to or recently under cloud or snow, or that jumps
    away from the scar without a confirming frame, is held (`guard`): the mask keeps its previous extent there and
    the state says why, for the frame's confidence flag.
    """
    valid = np.isfinite(ndvi)
    lush = is_lush(ndvi, params, state.mask)
    positives = [p for p in prompts if p[2] in (1, 2, 3)]
    block = seasonal_block(state, lush) if params.seasonal and not positives else None
    if block is not None and state.mask is not None and block.any():
        block &= ~creeping_edge(ndvi, state.mask, block, frame_threshold(ndvi, params, state.mask), params)
        if state.pending is not None:  # ground held earlier for a second look gets it, whatever the season
            block &= ~state.pending
    prev = state.mask
    raw, state = _track(state, ndvi=ndvi, prompts=prompts, params=params, block=block)
    mask, pending, note = raw, None, ""
    if params.guard and prev is not None and prev.any() and not positives:
        mask, pending, note = guard(raw, prev, valid, state.unseen_age, state.pending, params)
    held_age, revision = None, None
    if state.held_age is not None or block is not None:
        low = _low(ndvi, prev if prev is not None else np.zeros(ndvi.shape, bool), params)
        held_age, revision = observe_held(state.held_age, mask, low, valid, block, lush, state.lush)
    return mask, replace(
        state,
        mask=mask,
        green=observe_green(state.green, ndvi, lush, state.lush, params),
        lush=lush,
        unseen_age=observe_unseen(state.unseen_age, valid, params),
        pending=pending,
        note=note,
        held_age=held_age,
        revision=revision,
    )


def observe_held(
    age: np.ndarray | None,
    mask: np.ndarray,
    low: np.ndarray,
    valid: np.ndarray,
    block: np.ndarray | None,
    lush: bool,
    was_lush: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(held_age, revision): how many frames each pixel has been held back by the seasonal rule while low (or not
    observed since), and, on a growing-season frame, the held ground the scar takes now with that count (it stayed low
    into the growing season: it was scar on those earlier frames too; `track_site` corrects their masks).

    A hold starts on a dormant frame where the seasonal rule blocks ground seen low (`block`), goes on while the pixel
    stays out of the mask and low or unobserved (whatever the season: a second look by the guard included), and
    ends when the pixel is seen above the scar's NDVI (green: nothing is back-filled before that frame) or becomes
    scar. Holds are dropped when a dormant season begins, so a revision reaches back at most one dormant season
    (and the growing-season frames before its confirmation). Ground taken in the dormant season (creep along the
    edge) ends its hold without a revision: only the growing season confirms."""
    if age is None and block is None:
        return None, None
    prior = np.zeros(mask.shape, np.uint16) if age is None or (was_lush and not lush) else age
    held = prior > 0
    taken = held & mask
    revision = np.where(taken, prior, 0).astype(np.uint16) if lush and taken.any() else None
    going = held & ~mask & (low | ~valid)
    out = np.where(going, np.minimum(prior.astype(np.int32) + 1, np.iinfo(np.uint16).max), 0).astype(np.uint16)
    if block is not None:
        out[block & low & ~mask & ~held] = 1
    return (out if out.any() else None), revision


def _low(ndvi: np.ndarray, prev: np.ndarray, params: KnowledgeParams) -> np.ndarray:
    """Ground as low as the scar's edge on this frame (the boundary's weak threshold): what a hold waits on."""
    weak = weak_threshold(ndvi, prev, frame_threshold(ndvi, params, prev), params)
    out: np.ndarray = np.isfinite(ndvi) & (ndvi <= weak) & (ndvi > params.water_max)
    return out


def seasonal_block(state: KnowledgeState, lush: bool) -> np.ndarray | None:
    """Ground the scar may not grow onto on this frame: in the dormant season, pixels seen green on their last clear
    growing-season frame (a bare rim, deciduous forest, grass gone brown) that are not scar already. In the growing
    season nothing is blocked: a pixel that stays low there is scar, and from then on it is no longer 'green'.
    The price is a detection delay: scar growth onto vegetation in winter shows only when the vegetation around it
    greens up again (or once the ground it took was never seen green, e.g. a site whose history starts in winter)."""
    if lush or state.green is None or state.mask is None:
        return None
    out: np.ndarray = state.green & ~state.mask
    return out


def creeping_edge(
    ndvi: np.ndarray, prev: np.ndarray, block: np.ndarray, threshold: float, params: KnowledgeParams
) -> np.ndarray:
    """The part of `block` the scar may still take in the dormant season: low ground along the scar's edge, in a band
    no wider than `creep_px` (creep, even after weeks without a clear frame). A rim or a leafless forest that goes
    low wider than that stays blocked, all of it; so does a winter failure, until the growing season (the price of
    the rule). A rim narrower than `creep_px` is taken like creep."""
    weak = weak_threshold(ndvi, prev, threshold, params)
    low = block & np.isfinite(ndvi) & (ndvi <= weak) & (ndvi > params.water_max)
    if not low.any():
        return np.zeros(ndvi.shape, bool)
    edge = ndimage.binary_dilation(prev, structure=_disk(1), iterations=params.creep_px)
    far = ndimage.binary_opening(low & ~edge, structure=_disk(1))  # low ground beyond the edge band, 3 px or wider
    wide = ndimage.binary_dilation(far, structure=_disk(1), iterations=params.creep_px + 2) if far.any() else far
    out: np.ndarray = low & edge & ~wide
    return out


def observe_green(
    green: np.ndarray | None, ndvi: np.ndarray, lush: bool, was_lush: bool, params: KnowledgeParams
) -> np.ndarray | None:
    """Per-pixel phenology from the site's own clear frames: which pixels were seen green on some frame of the last
    growing season (a bare rim peaks in August and is brown again by the season's last frames) and not as low as
    the scar on a later one (a rim or a leafless forest is not yet that low on a growing-season frame; new scar is).
    The record starts afresh with each growing season, so ground that stays low through it is no longer 'green'."""
    if not lush:
        return green
    seen = np.isfinite(ndvi)
    now: np.ndarray = seen & (ndvi >= params.green_ndvi)
    bare = seen & (ndvi <= params.threshold + params.lush_raise)  # scar-low in the growing season: not seasonal
    return now if green is None or not was_lush else (green | now) & ~bare


def observe_unseen(age: np.ndarray | None, valid: np.ndarray, params: KnowledgeParams) -> np.ndarray:
    """Frames since each pixel was last not observed (cloud, shadow, snow, no data), capped at guard_memory + 1."""
    cap = params.guard_memory + 1
    older = np.full(valid.shape, cap, np.uint8) if age is None else np.minimum(age.astype(np.int16) + 1, cap)
    return np.where(valid, older, 0).astype(np.uint8)


def guard(
    raw: np.ndarray,
    prev: np.ndarray,
    valid: np.ndarray,
    unseen_age: np.ndarray | None,
    pending: np.ndarray | None,
    params: KnowledgeParams,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(mask, pending, note): the new area of `raw` over `prev` that one frame cannot vouch for is held, i.e. the
    mask keeps the previous extent there:

    - new area within `guard_near_px` of pixels not observed on this frame: the edges of flagged cloud and snow are
      where SCL misses thin cloud and partial snow, both as low in NDVI as bare ground;
    - new area on pixels not observed in the last `guard_memory` frames (where snow or cloud just was);
    - a new piece that reaches farther than `jump_px` from the previous mask and is not compact with its edge (its
      contact with the scar is short for its size: a missed cumulus touching the scar, rather than a lobe or a band
      along it), all of it, unless an earlier frame held the same ground (`pending`): a real failure is still there
      on the next clear frame, a cloud is not. Creep and lobes along the edge are taken at once.

    Held jumps (and pending ground not observed on this frame) stay pending, so a failure is confirmed one clear
    frame later.
    """
    new = raw & ~prev
    if not new.any():
        return raw, _pending_unobserved(pending, valid), ""
    unseen = ~valid
    near = (
        ndimage.binary_dilation(unseen, structure=_disk(1), iterations=params.guard_near_px)
        if unseen.any()
        else np.zeros(raw.shape, bool)
    )
    recent = (unseen_age < params.guard_memory) if unseen_age is not None else np.zeros(raw.shape, bool)
    # Held on an earlier frame and low again now, away from what this frame could not see: two frames agree.
    confirmed = (
        new & ndimage.binary_dilation(pending, iterations=2) & ~near
        if pending is not None
        else np.zeros(raw.shape, bool)
    )
    doubtful = new & (near | recent) & ~confirmed
    far = new & ~ndimage.binary_dilation(prev, structure=_disk(1), iterations=params.jump_px) & ~doubtful
    unconfirmed = np.zeros(raw.shape, bool)
    if far.sum() >= params.jump_min_px:  # the whole new piece that reaches far is a jump, its near part included
        labels, n = ndimage.label(new & ~doubtful, structure=np.ones((3, 3)))
        reach = np.bincount(labels[far].ravel(), minlength=n + 1) >= params.jump_min_px
        # A piece compact with the scar's edge (a lobe or band along it: long contact for its size) is growth; a blob
        # touching the scar over a short stretch (a missed cumulus) is not.
        size = np.bincount(labels.ravel(), minlength=n + 1)
        contact = np.bincount(labels[ndimage.binary_dilation(prev, structure=np.ones((3, 3)))].ravel(), minlength=n + 1)
        reach &= contact < params.compact_contact * np.sqrt(size)
        reach[0] = False
        unconfirmed = reach[labels] & ~confirmed
    held = doubtful | unconfirmed
    if not held.any():
        return raw, _pending_unobserved(pending, valid), ""
    mask = raw & ~held
    keep = held.copy()
    if (unseen_pending := _pending_unobserved(pending, valid)) is not None:
        keep |= unseen_pending
    pct = 100.0 * float(held.sum()) / max(float(prev.sum()), 1.0)
    if held.sum() < params.jump_min_px or pct < params.flag_pct:  # too little to matter: held without a flag
        return mask, keep, ""
    parts = (
        ("next to cloud or snow", new & near),
        ("where cloud or snow just was", new & recent),
        ("a jump awaiting a confirming frame", unconfirmed),
    )
    reasons = [why for why, part in parts if (part & held).any()]
    return mask, keep, f"held new area of {pct:.0f}% of the scar: {', '.join(reasons)}"


def _pending_unobserved(pending: np.ndarray | None, valid: np.ndarray) -> np.ndarray | None:
    """Pending ground survives a frame that did not see it; a frame that saw it and did not find scar drops it."""
    if pending is None:
        return None
    left = pending & ~valid
    return left if left.any() else None


def observe_frame(state: KnowledgeState, ndvi: np.ndarray, params: KnowledgeParams) -> KnowledgeState:
    """What a frame teaches without tracking (before the first prompt): phenology and where cloud or snow was."""
    lush = is_lush(ndvi, params, None)
    return replace(
        state,
        green=observe_green(state.green, ndvi, lush, state.lush, params),
        lush=lush,
        unseen_age=observe_unseen(state.unseen_age, np.isfinite(ndvi), params),
    )


def track_backward(
    ndvis: list[np.ndarray], prompts: list[list[Point]], later: np.ndarray, params: KnowledgeParams
) -> list[np.ndarray]:
    """Masks of the frames before the first prompted one, tracked backward in time from its mask `later`: the same
    step with time reversed, so the scar may shrink to nothing on dates before it existed (and then stays empty)."""
    state = KnowledgeState(mask=later)
    out: list[np.ndarray] = []
    for ndvi, clicks in zip(reversed(ndvis), reversed(prompts), strict=True):
        mask, state = knowledge_step(state, ndvi=ndvi, prompts=clicks, params=replace(params, seasonal=False))
        out.append(mask)
    return out[::-1]


def prompt_misses(
    ndvi: np.ndarray, prompts: list[Point], mask: np.ndarray, params: KnowledgeParams
) -> list[tuple[int, int]]:
    """Positive clicks (col, row) that found no scar: the mask is empty there. A click on intact vegetation (a prompt
    dated before its scar existed, or placed off it) would otherwise track an empty mask in silence."""
    return [(c, r) for c, r in _pixels([p for p in prompts if p[2] == 1], ndvi.shape) if not mask[r, c]]


def _track(
    state: KnowledgeState, *, ndvi: np.ndarray, prompts: list[Point], params: KnowledgeParams, block: np.ndarray | None
) -> tuple[np.ndarray, KnowledgeState]:
    """The tracker's core: threshold → prompt/memory-anchored components → boundary band. `block`: ground that may
    not become scar on this frame (unless it already was)."""
    threshold = frame_threshold(ndvi, params, state.mask)
    exclusion = state.exclusion if state.exclusion is not None else np.zeros(ndvi.shape, bool)
    negatives = [p for p in prompts if p[2] == 0]
    positives = [p for p in prompts if p[2] == 1]
    box = box_region(prompts, ndvi.shape)
    anchors = _spots(positives, ndvi.shape, 0) | box | (state.anchors if state.anchors is not None else False)
    if negatives:
        exclusion = exclusion | exclusion_region(ndvi, negatives, anchors, threshold)
    if positives and exclusion.any():  # a positive click frees the excluded patch it falls in
        labels, _ = ndimage.label(exclusion)
        exclusion = exclusion & ~np.isin(labels, [labels[r, c] for c, r in _pixels(positives, ndvi.shape)] + [0])
    valid = np.isfinite(ndvi)
    under_cloud = state.mask & ~valid if state.mask is not None else np.zeros(ndvi.shape, bool)
    barred = exclusion | block if block is not None else exclusion
    cand = despeckle((candidates(ndvi, threshold, params) & ~barred) | under_cloud, params.open_px)
    core = _anchored(cand, state.mask, positives, params.min_overlap, box)
    mask = _boundary(ndvi, core, state.mask, barred | ~(valid | under_cloud), threshold, params) | under_cloud
    mask = ndimage.binary_fill_holes(mask)
    if box.any():  # a box says the scar lies inside it, on the frame it was drawn on
        mask &= ndimage.binary_dilation(box, iterations=2)
    if negatives:  # a negative click removes its own spot even inside the scar
        mask &= ~_spots(negatives, ndvi.shape, radius=2)
    return mask, replace(state, mask=mask, exclusion=exclusion, anchors=anchors, frames=state.frames + 1)


def _boundary(
    ndvi: np.ndarray,
    core: np.ndarray,
    prior: np.ndarray | None,
    blocked: np.ndarray,
    threshold: float,
    params: KnowledgeParams,
) -> np.ndarray:
    """Hysteresis: grow the scar core (and what was scar before) into pixels below the midpoint between the scar's
    and its surroundings' NDVI. Mixed edge pixels lean towards vegetation, so the plain threshold misses the
    boundary band; the growth is limited to `grow_px` from the seeds per frame so it cannot leak into dark
    vegetation."""
    reference = prior if prior is not None and prior.any() else core
    if not reference.any():
        return core
    weak = weak_threshold(ndvi, reference, threshold, params)
    low = (ndvi <= weak) & (ndvi > params.water_max) & ~blocked
    seeds = core | (low & reference)
    # Only the strong core may push the boundary outward; the previous mask merely keeps its own ground (no ratchet).
    reach = ndimage.binary_dilation(core, structure=_disk(1), iterations=params.grow_px) | reference
    labels, _ = ndimage.label(low & reach | seeds, structure=np.ones((3, 3)))
    out: np.ndarray = np.isin(labels, np.unique(labels[seeds])) & (labels > 0)
    return out


def weak_threshold(ndvi: np.ndarray, reference: np.ndarray, threshold: float, params: KnowledgeParams) -> float:
    """Midpoint between the median NDVI inside the scar and in a ring around it, clipped above the strong threshold."""
    valid = np.isfinite(ndvi)
    inner = ndimage.binary_erosion(reference, iterations=2) & valid
    inner = inner if inner.sum() >= 20 else reference & valid
    ring = ndimage.binary_dilation(reference, iterations=12) & ~ndimage.binary_dilation(reference, iterations=4) & valid
    if inner.sum() < 5 or ring.sum() < 20:
        return threshold
    scar, around = float(np.median(ndvi[inner])), float(np.median(ndvi[ring]))
    if around - scar < params.min_contrast:  # the old scar no longer stands out: no boundary band to recover
        return threshold
    return min(max((scar + around) / 2, threshold), threshold + params.max_weak_raise)


def box_region(prompts: list[Point], shape: tuple[int, int]) -> np.ndarray:
    """Pixels inside the boxes given as corner pairs (label 2 top-left, then label 3 bottom-right)."""
    out = np.zeros(shape, bool)
    corners = [p for p in prompts if p[2] in (2, 3)]
    for (c0, r0, l0), (c1, r1, l1) in zip(corners[::2], corners[1::2], strict=False):
        if (l0, l1) == (2, 3):
            out[max(int(r0), 0) : int(r1) + 1, max(int(c0), 0) : int(c1) + 1] = True
    return out


def _anchored(
    cand: np.ndarray,
    prior: np.ndarray | None,
    positives: list[Point],
    min_overlap: float,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Components that hold a positive prompt, lie in a box prompt, or overlap the previous mask enough to be its
    continuation."""
    labels, n = ndimage.label(cand, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(cand.shape, bool)
    keep = np.zeros(n + 1, bool)
    for c, r in _pixels(positives, cand.shape):
        keep[labels[r, c]] = True
    if box is not None and box.any():
        keep[np.unique(labels[box])] = True
    if prior is not None and prior.any():
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        overlap = np.bincount(labels[prior].ravel(), minlength=n + 1)
        keep |= overlap >= np.maximum(min_overlap * sizes, 1)
    keep[0] = False
    out: np.ndarray = keep[labels]
    return out


def _pixels(points: list[Point], shape: tuple[int, int]) -> list[tuple[int, int]]:
    h, w = shape
    return [(int(c), int(r)) for c, r, _ in points if 0 <= int(c) < w and 0 <= int(r) < h]


def _spots(points: list[Point], shape: tuple[int, int], radius: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    for c, r in _pixels(points, shape):
        out[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1] = True
    return out


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    out: np.ndarray = x * x + y * y <= radius * radius
    return out


BIT_LAYERS = ("mask", "exclusion", "anchors", "green", "pending")
AGE_LAYERS = ("held_age", "revision")  # uint16 per pixel


def encode_state(state: KnowledgeState) -> bytes:
    """Packed bit layers, the per-pixel unseen age (uint8), the seasonal hold's age and revision (uint16, only while
    there are any) and the note: a few bytes per pixel at most, whatever the history length."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {
        "frames": np.array(state.frames),
        "note": np.array(state.note),
        "lush": np.array(state.lush),
    }
    for name in BIT_LAYERS:
        arr = getattr(state, name)
        if arr is not None:
            arrays[name] = np.packbits(arr)
            arrays[name + "_shape"] = np.array(arr.shape)
    if state.unseen_age is not None:
        arrays["unseen_age"] = state.unseen_age.astype(np.uint8)
    for name in AGE_LAYERS:
        if (arr := getattr(state, name)) is not None:
            arrays[name] = arr.astype(np.uint16)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_state(data: bytes) -> KnowledgeState:
    with np.load(io.BytesIO(data)) as z:

        def unpack(name: str) -> np.ndarray | None:
            if name not in z:
                return None
            shape = tuple(z[name + "_shape"])
            out: np.ndarray = np.unpackbits(z[name], count=int(np.prod(shape))).reshape(shape).astype(bool)
            return out

        layers = {name: unpack(name) for name in BIT_LAYERS}
        age = np.array(z["unseen_age"], np.uint8) if "unseen_age" in z else None
        note = str(z["note"]) if "note" in z else ""
        lush = bool(z["lush"]) if "lush" in z else False
        ages = {name: np.array(z[name], np.uint16) if name in z else None for name in AGE_LAYERS}  # not in old states
        return KnowledgeState(**layers, **ages, frames=int(z["frames"]), unseen_age=age, note=note, lush=lush)
