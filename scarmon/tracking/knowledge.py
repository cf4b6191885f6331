"""The weight-free knowledge tracker: NDVI threshold → prompt/memory-anchored components → temporal consistency.

Pure functions of arrays. It is the paper's "knowledge-guided" prior turned into a tracker that needs no trained
weights: a scar is low-NDVI ground connected to what was scar before (or to a positive prompt), never water, never
the stable bare ground a negative prompt marks. Its state is the previous mask and the excluded region, so it
resumes at a cost independent of the history length, and equals a full re-run exactly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

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


@dataclass(frozen=True)
class KnowledgeState:
    mask: np.ndarray | None = None           # the last frame's mask (the tracker's memory)
    exclusion: np.ndarray | None = None      # stable bare ground / water marked by negative prompts
    anchors: np.ndarray | None = None        # every positive click so far: where the scar certainly is
    frames: int = 0                          # frames tracked so far (for people, not for the logic)


def frame_threshold(ndvi: np.ndarray, params: KnowledgeParams, prior: np.ndarray | None) -> float:
    """The paper raises the threshold a little in lush seasons; lushness is read off the frame's own background
    (median NDVI outside the scar), so it works in both hemispheres and in odd years."""
    background = ndvi[np.isfinite(ndvi) & ~(prior if prior is not None else np.zeros(ndvi.shape, bool))]
    if background.size and float(np.median(background)) >= params.lush_background:
        return params.threshold + params.lush_raise
    return params.threshold


def candidates(ndvi: np.ndarray, threshold: float, params: KnowledgeParams) -> np.ndarray:
    """Bare ground: NDVI in (water_max, threshold]."""
    return np.isfinite(ndvi) & (ndvi <= threshold) & (ndvi > params.water_max)


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
        nearer_negative = ndimage.distance_transform_edt(~_spots(negatives, ndvi.shape, 0)) < \
            ndimage.distance_transform_edt(~anchors)
        region &= nearer_negative
    return ndimage.binary_dilation(region, iterations=1) if region.any() else region


def knowledge_step(state: KnowledgeState, *, ndvi: np.ndarray, prompts: list[Point],
                   params: KnowledgeParams) -> tuple[np.ndarray, KnowledgeState]:
    """One frame: (prior state, new frame) → (mask, new state)."""
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
    cand = despeckle((candidates(ndvi, threshold, params) & ~exclusion) | under_cloud, params.open_px)
    core = _anchored(cand, state.mask, positives, params.min_overlap, box)
    mask = _boundary(ndvi, core, state.mask, exclusion | ~(valid | under_cloud), threshold, params) | under_cloud
    mask = ndimage.binary_fill_holes(mask)
    if box.any():  # a box says the scar lies inside it, on the frame it was drawn on
        mask &= ndimage.binary_dilation(box, iterations=2)
    if negatives:  # a negative click removes its own spot even inside the scar
        mask &= ~_spots(negatives, ndvi.shape, radius=2)
    return mask, KnowledgeState(mask, exclusion, anchors, state.frames + 1)


def _boundary(ndvi: np.ndarray, core: np.ndarray, prior: np.ndarray | None, blocked: np.ndarray, threshold: float,
              params: KnowledgeParams) -> np.ndarray:
    """Hysteresis: grow the scar core (and what was scar before) into pixels below the midpoint between the scar's
    and its surroundings' NDVI. Mixed edge pixels lean towards vegetation, so the plain threshold misses the
    boundary band; the growth is limited to `grow_px` from the seeds per frame so it cannot leak into dark vegetation."""
    reference = prior if prior is not None and prior.any() else core
    if not reference.any():
        return core
    weak = weak_threshold(ndvi, reference, threshold, params)
    low = (ndvi <= weak) & (ndvi > params.water_max) & ~blocked
    seeds = core | (low & reference)
    # Only the strong core may push the boundary outward; the previous mask merely keeps its own ground (no ratchet).
    reach = ndimage.binary_dilation(core, structure=_disk(1), iterations=params.grow_px) | reference
    labels, _ = ndimage.label(low & reach | seeds, structure=np.ones((3, 3)))
    return np.isin(labels, np.unique(labels[seeds])) & (labels > 0)


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
    for (c0, r0, l0), (c1, r1, l1) in zip(corners[::2], corners[1::2]):
        if (l0, l1) == (2, 3):
            out[max(int(r0), 0): int(r1) + 1, max(int(c0), 0): int(c1) + 1] = True
    return out


def _anchored(cand: np.ndarray, prior: np.ndarray | None, positives: list[Point], min_overlap: float,
              box: np.ndarray | None = None) -> np.ndarray:
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
    return keep[labels]


def _pixels(points: list[Point], shape: tuple[int, int]) -> list[tuple[int, int]]:
    h, w = shape
    return [(int(c), int(r)) for c, r, _ in points if 0 <= int(c) < w and 0 <= int(r) < h]


def _spots(points: list[Point], shape: tuple[int, int], radius: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    for c, r in _pixels(points, shape):
        out[max(r - radius, 0): r + radius + 1, max(c - radius, 0): c + radius + 1] = True
    return out


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius: radius + 1, -radius: radius + 1]
    return x * x + y * y <= radius * radius


def encode_state(state: KnowledgeState) -> bytes:
    buf = io.BytesIO()
    arrays = {"frames": np.array(state.frames)}
    for name in ("mask", "exclusion", "anchors"):
        arr = getattr(state, name)
        if arr is not None:
            arrays[name] = np.packbits(arr)
            arrays[name + "_shape"] = np.array(arr.shape)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_state(data: bytes) -> KnowledgeState:
    with np.load(io.BytesIO(data)) as z:
        def unpack(name: str) -> np.ndarray | None:
            if name not in z:
                return None
            shape = tuple(z[name + "_shape"])
            return np.unpackbits(z[name], count=int(np.prod(shape))).reshape(shape).astype(bool)
        return KnowledgeState(unpack("mask"), unpack("exclusion"), unpack("anchors"), int(z["frames"]))
