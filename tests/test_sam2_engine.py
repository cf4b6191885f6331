"""SAM 2 engine: causal prompts and corrections on any frame; every resume equals one call EXACTLY (tolerance 0).

Real SAM 2.1 hiera-t with RANDOM weights (no checkpoint can be downloaded here), model image size 128, 64×64
synthetic frames. A random-weight model paints a nearly input-independent mask, so IoU or loose logit tolerances
cannot tell a broken resume from a right one. These tests compare on CPU at tolerance 0: the mask logits of every
frame, every tensor of the resume states, and the inputs of SAM 2's memory attention (memory, positional
encodings, number of object-pointer tokens) recorded by a spy for every frame. A self-check corrupts resume states
the ways a resume can go wrong (oldest pointer frame dropped, a memory frame dropped, a conditioning frame shifted
in time or dropped) and requires the comparison to fail for each.
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from scarmon.tracking.sam2_engine import (  # noqa: E402
    CheckpointError,
    ConfigError,
    EngineConfig,
    ResumeError,
    Sam2Engine,
    TrackResult,
    build_predictor,
    compare_resume,
    describe_resume,
    preprocess_frame,
)

SIZE = 128
N = 18  # > max_obj_ptrs_in_encoder (16): the pointer window saturates inside the test
J = 12  # refined frame of the SAM 2 comparison
PROMPT0 = {0: [(30.0, 32.0, 1), (4.0, 4.0, 0)]}
CLICKS = [(40.0, 20.0, 0), (30.0, 32.0, 1)]

# Events of the main sequence: the first site prompt on frame 2 (frames 0-1 tracked backward), a correction on
# frame 0 (before the first prompt), a second site prompt on frame 9 that also gets a correction, two corrections
# in one window (12, 13) and one on the last frame.
PROMPTS = {2: [(30.0, 32.0, 1), (4.0, 4.0, 0)], 9: [(22.0, 40.0, 1)]}
CORRECTIONS = {0: [(50.0, 10.0, 0)], 9: [(30.0, 32.0, 1)], 12: [(40.0, 20.0, 0)], 13: [(10.0, 50.0, 0)],
               17: [(45.0, 45.0, 1)]}  # fmt: skip
FIRST_PROMPT = 2


def make_frames(n: int, hw: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:hw, :hw]
    out = []
    for t in range(n):
        r = 8 + 0.6 * t
        img = np.where((yy - 32) ** 2 + (xx - 30) ** 2 < r * r, 50.0, 200.0) + rng.normal(0, 8, (hw, hw))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def assert_exact(got: list[np.ndarray], want: list[np.ndarray], label: str) -> None:
    assert len(got) == len(want), label
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        diff = float(np.abs(g - w).max())
        assert diff == 0.0, f"{label}: frame #{k} logit max abs diff {diff}"


# ------------------------------------------------------------------------------------------------ spy


class MemorySpy:
    """Records, per frame SAM 2 works on, the inputs of every memory-attention call on it."""

    def __init__(self, predictor: Any):
        self.p = predictor
        self.frame: int | None = None
        self.calls: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def _pre_hook(self, _module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        assert self.frame is not None
        self.calls[self.frame].append({
            "curr": [t.detach().clone() for t in kwargs["curr"]] if isinstance(kwargs["curr"], list)
            else kwargs["curr"].detach().clone(),
            "memory": kwargs["memory"].detach().clone(),
            "memory_pos": kwargs["memory_pos"].detach().clone(),
            "num_obj_ptr_tokens": int(kwargs["num_obj_ptr_tokens"]),
        })  # fmt: skip

    @contextmanager
    def recording(self) -> Iterator[MemorySpy]:
        self.calls = defaultdict(list)
        original = self.p.track_step

        def track_step(*args: Any, **kwargs: Any) -> Any:
            self.frame = int(kwargs["frame_idx"])
            return original(*args, **kwargs)

        self.p.track_step = track_step
        handle = self.p.memory_attention.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()
            del self.p.track_step


def same_calls(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x["num_obj_ptr_tokens"] != y["num_obj_ptr_tokens"]:
            return False
        for k in ("memory", "memory_pos"):
            if x[k].shape != y[k].shape or not torch.equal(x[k], y[k]):
                return False
    return True


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def engine() -> Iterator[Sam2Engine]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster and far steadier than two fighting
    torch.manual_seed(0)
    cfg = EngineConfig(image_size=SIZE)
    eng = Sam2Engine(cfg, build_predictor(cfg))
    yield eng
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return make_frames(N)


@pytest.fixture(scope="module")
def spy(engine: Sam2Engine) -> MemorySpy:
    return MemorySpy(engine.predictor)


def vanilla_state(predictor: Any, frames: list[np.ndarray]) -> dict[str, Any]:
    """What SAM 2's own ``init_state`` builds (all frames loaded, num_frames = N), without a JPEG folder."""
    images = torch.stack([preprocess_frame(f, predictor.image_size) for f in frames])
    h, w = frames[0].shape
    dev = predictor.device
    st = {
        "images": images, "num_frames": len(images), "offload_video_to_cpu": False,
        "offload_state_to_cpu": False, "video_height": h, "video_width": w, "device": dev,
        "storage_device": dev, "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {},
        "constants": {}, "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }  # fmt: skip
    return st


@pytest.fixture(scope="module")
def one_call(engine: Sam2Engine, frames: list[np.ndarray], spy: MemorySpy) -> tuple[TrackResult, MemorySpy]:
    """All events, one call over all frames, with the memory-attention inputs of every frame recorded, and the
    clicks SAM 2 got (``rec.adds``: frame, labels, whether the frame had been tracked before)."""
    p = engine.predictor
    adds: list[tuple[int, list[int], bool]] = []
    original = p.add_new_points_or_box

    def add(st: dict[str, Any], frame_idx: int, obj_id: int, **kw: Any) -> Any:
        adds.append((frame_idx, list(kw["labels"]), frame_idx in st["frames_tracked_per_obj"][0]))
        return original(st, frame_idx, obj_id, **kw)

    t = time.perf_counter()
    p.add_new_points_or_box = add
    try:
        with spy.recording():
            r = engine.track_detailed(frames, PROMPTS, corrections=CORRECTIONS, snapshots=True)
            calls = dict(spy.calls)
    finally:
        del p.add_new_points_or_box
    dt = time.perf_counter() - t
    print(f"\n[sam2_engine] one call, {N} frames 64x64 at image_size {SIZE}: {dt / N:.3f} s/frame")
    rec = MemorySpy(engine.predictor)
    rec.calls = defaultdict(list, calls)
    rec.adds = adds  # type: ignore[attr-defined]
    return r, rec


# ------------------------------------------------------------------------------------------------ comparisons


def check_resume(
    engine: Sam2Engine,
    spy: MemorySpy,
    frames: list[np.ndarray],
    one: TrackResult,
    ref: MemorySpy,
    resume: bytes,
    k: int,
    n: int,
) -> None:
    """Frames k..k+n-1 resumed from ``resume`` (the state after k-1) must equal the one call exactly: logits,
    the state after the last of them, and the memory-attention inputs of each frame."""
    with spy.recording():
        r = engine.track_detailed(frames[k : k + n], PROMPTS, corrections=CORRECTIONS, resume=resume, first_index=k)
        calls = dict(spy.calls)
    assert_exact(r.logits, one.logits[k : k + n], f"resume at {k}")
    assert compare_resume(r.resume, one.snapshots[k + n - 1]) == [], f"state after {k + n - 1}"
    for g in range(k, k + n):
        assert same_calls(calls[g], ref.calls[g]), f"memory-attention inputs of frame {g} (resume at {k})"


def corrupt(state: bytes, how: str) -> bytes:
    rs = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
    frames = rs["frames"]
    cond = sorted(g for g, r in frames.items() if r["cond"])
    ptr = sorted(g for g, r in frames.items() if not r["cond"])
    mem = sorted(g for g, r in frames.items() if not r["cond"] and r["maskmem_features"] is not None)
    if how == "drop_oldest_pointer":
        del frames[ptr[0]]
    elif how == "drop_memory_frame":
        del frames[mem[0]]
    elif how == "shift_cond_frame":
        frames[cond[0] - 1] = frames.pop(cond[0])  # frame 0 -> -1: nothing else sits there
    elif how == "drop_cond_frame":
        del frames[cond[0]]
    else:
        raise ValueError(how)
    buf = io.BytesIO()
    torch.save(rs, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ tests


def test_engine_equals_sam2_video_api_with_a_click_on_a_later_frame(engine, frames):
    """SAM 2's own API on the whole video (prompt, propagate, click on tracked frame J, re-propagate) equals the
    engine with a correction on J, at tolerance 0: the correction is SAM 2's refinement (memory + previous mask)."""
    p = engine.predictor
    st = vanilla_state(p, frames)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        pts = PROMPT0[0]
        p.add_new_points_or_box(st, 0, 1, points=[q[:2] for q in pts], labels=[q[2] for q in pts])
        full = {g: m[0, 0].float().numpy() for g, _, m in p.propagate_in_video(st)}
        p.add_new_points_or_box(
            st, J, 1, points=[q[:2] for q in CLICKS], labels=[q[2] for q in CLICKS], clear_old_points=False
        )
        refined = {g: m[0, 0].float().numpy() for g, _, m in p.propagate_in_video(st, start_frame_idx=J)}
    want = [full[g] for g in range(J)] + [refined[g] for g in range(J, N)]
    got = engine.track_detailed(frames, PROMPT0, corrections={J: CLICKS})
    fractions = [float(m.mean()) for m in got.masks]
    print(f"[sam2_engine] mask fractions {[round(f, 2) for f in fractions]}")
    assert all(0.01 < f < 0.99 for f in fractions), "random-weight masks are trivial: test would be meaningless"
    assert all(float(x.std()) > 0 for x in got.logits)
    assert_exact(got.logits, want, "engine vs SAM 2 video API")
    assert float(np.abs(refined[J] - full[J]).max()) > 0  # the click changed frame J


def test_events_are_routed_through_sam2_refinement(one_call):
    """Which clicks SAM 2 got, on which frame, and whether the frame was tracked first (refinement with memory
    and its previous mask) or not (the first prompt only)."""
    one, rec = one_call
    # first prompt (untracked: initial conditioning frame), then backward to 0 (correction before the first
    # prompt), then forward: 9 = site prompt + correction in ONE refinement, 12 and 13 both applied, 17 the last
    assert rec.adds == [
        (2, [1, 0], False),
        (0, [0], True),
        (9, [1, 1], True),
        (12, [0], True),
        (13, [0], True),
        (17, [1], True),
    ]
    info = describe_resume(one.resume)
    assert info["cond_frames"] == [0, 2, 9, 12, 13, 17]
    assert info["prompts"][9] == [(22.0, 40.0, 1), (30.0, 32.0, 1)]  # the site prompt is kept
    assert info["corrections"] == [0, 9, 12, 13, 17] and info["site_prompts"] == [2, 9]


def test_resume_at_every_frame_equals_one_call(engine, frames, one_call, spy):
    """From the state after every forward-tracked frame, the next frames equal the one call bit for bit."""
    one, ref = one_call
    assert sorted(one.snapshots) == list(range(FIRST_PROMPT, N))  # backward frames have no resume state
    for k in range(FIRST_PROMPT + 1, N):
        check_resume(engine, spy, frames, one, ref, one.snapshots[k - 1], k, 1)


@pytest.mark.parametrize("window", [3])
def test_windowed_chain_equals_one_call(engine, frames, one_call, window):
    """The whole series cut into windows (each call resumes from the previous one's state) equals one call; the
    first call reaches the first prompt, as track_site does."""
    one, _ = one_call
    logits: list[np.ndarray] = []
    resume = None
    lo = 0
    while lo < N:
        hi = min(lo + window, N) if resume is not None else max(lo + window, FIRST_PROMPT + 1)
        r = engine.track_detailed(frames[lo:hi], PROMPTS, corrections=CORRECTIONS, resume=resume, first_index=lo)
        logits += r.logits
        resume = r.resume
        lo = hi
    assert_exact(logits, one.logits, f"windows of {window}")
    assert compare_resume(resume, one.resume) == []


@pytest.mark.parametrize("how", ["drop_oldest_pointer", "drop_memory_frame", "shift_cond_frame", "drop_cond_frame"])
def test_self_check_corrupted_states_fail_the_comparison(engine, frames, one_call, spy, how):
    """The comparison above is not vacuous: each deliberately broken resume state makes it fail."""
    one, ref = one_call
    k = 16  # state after 15: pointer window full, memory 10..15, conditioning frames 0, 2, 9, 12, 13
    bad = corrupt(one.snapshots[k - 1], how)
    with pytest.raises(AssertionError):
        check_resume(engine, spy, frames, one, ref, bad, k, 1)
    # and by each of the three measures on its own: logits, memory-attention inputs
    with spy.recording():
        r = engine.track_detailed(frames[k : k + 1], PROMPTS, corrections=CORRECTIONS, resume=bad, first_index=k)
    diff = float(np.abs(r.logits[0] - one.logits[k]).max())
    print(f"[sam2_engine] corrupted state ({how}): max logit diff on frame {k}: {diff:.3g}")
    assert diff > 0
    assert not same_calls(spy.calls[k], ref.calls[k])


def test_correction_added_later_equals_from_scratch_and_is_causal(engine, frames, one_call):
    """A correction on frame 13 added after tracking (re-track from the state before 13) equals one call from
    scratch that had it; frames before 13 do not depend on it (causal events)."""
    one, _ = one_call
    before = {g: v for g, v in CORRECTIONS.items() if g < 13}
    base = engine.track_detailed(frames[:13], PROMPTS, corrections=before, snapshots=True)
    assert_exact(base.logits, one.logits[:13], "frames before a later correction")
    assert compare_resume(base.resume, one.snapshots[12]) == []
    later = engine.refine_detailed(
        frames[13:], CORRECTIONS[13], resume=base.snapshots[12], first_index=13, corrections={17: CORRECTIONS[17]}
    )
    assert_exact(later.logits, one.logits[13:], "refine on 13 vs from scratch")
    assert compare_resume(later.resume, one.resume) == []


def test_prompt_changes_are_found(engine, one_call):
    one, _ = one_call
    assert engine.first_changed(one.resume, PROMPTS, CORRECTIONS) is None
    assert engine.first_changed(one.snapshots[10], PROMPTS, {g: v for g, v in CORRECTIONS.items() if g != 12}) is None
    assert engine.first_changed(one.snapshots[12], PROMPTS, {g: v for g, v in CORRECTIONS.items() if g != 12}) == 12
    moved = {2: PROMPTS[2], 8: PROMPTS[9]}
    assert engine.first_changed(one.resume, moved, CORRECTIONS) == 8
    assert engine.first_changed(one.resume, {}, {}) == 0


def test_state_is_bounded(one_call):
    one, _ = one_call
    sizes = [len(one.snapshots[g]) for g in sorted(one.snapshots)]
    print(f"[sam2_engine] resume bytes after frames {FIRST_PROMPT}..{N - 1}: {sizes}")
    for g in sorted(one.snapshots):
        info = describe_resume(one.snapshots[g])
        assert info["last"] == g
        assert len(info["memory_frames"]) <= 6 and len(info["pointer_frames"]) <= 15
        assert all(c <= g for c in info["cond_frames"])  # causal: no future conditioning frame
    assert max(sizes) < 500_000


def test_resume_errors(engine, frames, one_call):
    one, _ = one_call
    with pytest.raises(ResumeError, match="must start at 18"):
        engine.track([frames[0]], PROMPTS, corrections=CORRECTIONS, resume=one.resume, first_index=17)
    with pytest.raises(ValueError, match="fresh track needs a site prompt"):
        engine.track(frames[:2], {5: [(1, 1, 1)]})
    with pytest.raises(ValueError, match="fresh track needs a site prompt"):
        engine.track(frames[:2], {}, corrections={0: [(1, 1, 1)]})
    with pytest.raises(ResumeError, match="frame 3 are not the ones"):
        engine.track(
            [frames[0]], {**PROMPTS, 3: [(5, 5, 1)]}, corrections=CORRECTIONS, resume=one.resume, first_index=N
        )
    with pytest.raises(ResumeError, match="must start at 6"):
        engine.refine([frames[J]], CLICKS, resume=one.snapshots[5], first_index=J)
    with pytest.raises(ResumeError):
        engine.track([frames[0][:32]], PROMPTS, corrections=CORRECTIONS, resume=one.resume, first_index=N)
    with pytest.raises(ResumeError, match="corrupt"):
        engine.track([frames[0]], PROMPTS, resume=b"nope", first_index=N)


def test_checkpoint_round_trip_and_errors(engine, frames, tmp_path):
    ckpt = tmp_path / "sam2_random.pt"
    torch.save({"model": engine.predictor.state_dict()}, ckpt)
    torch.manual_seed(123)  # the loaded weights, not this seed, must decide the outputs
    loaded = Sam2Engine(EngineConfig(image_size=SIZE, checkpoint=str(ckpt)))
    want = engine.track_detailed(frames[:2], PROMPT0)
    got = loaded.track_detailed(frames[:2], PROMPT0)
    assert_exact(got.logits, want.logits, "checkpoint round trip")
    del loaded

    sd = engine.predictor.state_dict()
    sd.pop("maskmem_tpos_enc")
    bad = tmp_path / "missing_key.pt"
    torch.save({"model": sd}, bad)
    with pytest.raises(CheckpointError, match=r"missing_key\.pt.*1 missing key\(s\): maskmem_tpos_enc"):
        build_predictor(EngineConfig(image_size=SIZE, checkpoint=str(bad)))

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        build_predictor(EngineConfig(image_size=SIZE, checkpoint=str(junk)))
    with pytest.raises(CheckpointError, match=r"nowhere\.pt"):
        build_predictor(EngineConfig(image_size=SIZE, checkpoint=str(tmp_path / "nowhere.pt")))
    with pytest.raises(ConfigError, match=r"use 'configs/sam2\.1/sam2\.1_hiera_s\.yaml'"):
        build_predictor(EngineConfig(config="sam2.1_hiera_small", checkpoint="/x/sam2.1_hiera_small.pt"))


def test_box_corners_equal_sam2_box_prompt(engine, frames):
    """A box prompt given as two corner points (labels 2 and 3), as scarmon passes boxes, equals SAM 2's own box."""
    p = engine.predictor
    box = [14.0, 16.0, 44.0, 46.0]
    st = vanilla_state(p, frames[:16])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        p.add_new_points_or_box(st, 0, 1, box=box)
        want = [m[0, 0].float().numpy() for _, _, m in p.propagate_in_video(st, max_frame_num_to_track=2)]
    got = engine.track_detailed(frames[:3], {0: [(box[0], box[1], 2), (box[2], box[3], 3)]})
    assert_exact(got.logits, want, "box prompt")


def test_invalid_pixels_are_filled_from_their_last_clear_value(engine, frames):
    from scarmon.tracking.sam2_engine import _fill_invalid

    a = np.array([[10, 20], [30, 40]], np.uint8)
    v = np.array([[True, False], [True, True]])
    seen, last = _fill_invalid(a, v, None)
    assert seen.tolist() == [[10, 30], [30, 40]]  # never seen clear: the median of the clear pixels
    seen, last = _fill_invalid(np.zeros((2, 2), np.uint8), np.array([[False, True], [False, False]]), last)
    assert seen.tolist() == [[10, 0], [30, 40]]

    video = [f.copy() for f in frames[:3]]
    valid = [np.ones(f.shape, bool) for f in video]
    valid[1][10:40, 20:50] = False
    valid[2][30:60, 0:30] = False
    for f, v in zip(video, valid, strict=True):
        f[~v] = 0  # how the stored 8-bit frame marks pixels that were not clear
    one = engine.track_detailed(video, PROMPT0, valid=valid)
    a = engine.track_detailed(video[:2], PROMPT0, valid=valid[:2])
    b = engine.track_detailed(video[2:], PROMPT0, valid=valid[2:], resume=a.resume, first_index=2)
    assert_exact(a.logits + b.logits, one.logits, "filled frames, split vs one call")
    assert compare_resume(b.resume, one.resume) == []
    black = engine.track_detailed(video[:2], PROMPT0)
    assert float(np.abs(black.logits[1] - one.logits[1]).max()) > 0
