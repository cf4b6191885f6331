"""SAM 2 video engine over in-memory 8-bit frames, with a bounded resume state.

The frames of a site are a video; SAM 2's video predictor tracks the scar from prompt clicks (Zhou, Mei et al.
2025, arXiv 2510.10084). A monitoring series only ever grows, so the engine never reloads the history: each call
tracks the new frames and returns a *resume state* (bytes) holding exactly what SAM 2 reads to continue.

What SAM 2 reads when it tracks frame ``f`` forward (``SAM2Base._prepare_memory_conditioned_features``):

* the memory (``maskmem_features``) of every conditioning frame (prompted or corrected frames; all of them, since
  ``max_cond_frames_in_attn`` is -1), and their object pointers when they lie in the past;
* the memory of the ``num_maskmem - 1`` (6) frames ``f-1 .. f-6`` (stride 1);
* the object pointers of frames ``f-1 .. f-(max_obj_ptrs_in_encoder-1)`` (15);
* the frame-index *differences* between ``f`` and those frames (temporal positional encodings).

The resume state after frame ``L`` keeps what frames ``L+1`` (continue) and ``L`` (a correction on the last frame)
need: conditioning frames (memory + pointer + clicks), the memory of frames ``L-6 .. L``, the pointers of frames
``L-15 .. L``, the low-res logits of ``L``, and the (constant) memory positional encoding. Its size and the cost
of one new frame depend on the number of conditioning frames (prompts + corrections), never on the history length.

Frame indices are GLOBAL indices of the site sequence, used unchanged as SAM 2's frame keys: SAM 2 only uses
them as dictionary keys and through differences, so nothing needs re-indexing. The image tensor of a call is a
lazy window that holds (and preprocesses) only the frames of that call. ``num_frames`` of the inference state is
set to ``max(last + 1, max_obj_ptrs_in_encoder)``, so the pointer window is always the full 16 (what SAM 2 does on
any video of 16+ frames): results then do not depend on how the series is cut into calls.
"""

from __future__ import annotations

from scarmon.errors import ScarmonError
import contextlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "CheckpointError",
    "EngineConfig",
    "ResumeError",
    "Sam2Engine",
    "TrackResult",
    "build_predictor",
    "describe_resume",
    "preprocess_frame",
]

OBJ_ID = 1
RESUME_FORMAT = "scarmon-sam2-resume"
RESUME_VERSION = 1
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
NO_OBJ_SCORE = -1024.0  # sam2.modeling.sam2_base.NO_OBJ_SCORE: logits of frames where the object is absent


class CheckpointError(ScarmonError, RuntimeError):
    """A SAM 2 checkpoint file is missing, unreadable, or does not match the model config."""


class ResumeError(ValueError):
    """A resume state is corrupt, or does not fit the engine or the call."""


@dataclass(frozen=True)
class EngineConfig:
    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    checkpoint: str | None = None
    device: str = "cpu"
    image_size: int = 1024


@dataclass
class TrackResult:
    frame_indices: list[int]
    masks: list[np.ndarray]  # bool H×W per frame
    logits: list[np.ndarray]  # float32 H×W mask logits per frame (frame resolution)
    object_scores: list[float]  # SAM 2 object-score logit per frame (> 0: object present)
    resume: bytes
    snapshots: dict[int, bytes] = field(default_factory=dict)  # global frame -> resume state after it


# --------------------------------------------------------------------------------------------------- building


def _autocast(device):
    import torch

    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _configure(predictor) -> None:
    # no sam2._C on these machines: hole filling needs it (the builder forces fill_hole_area=8)
    predictor.fill_hole_area = 0
    # corrective clicks become conditioning frames, so they stick (sam2 issues 546, 719, 731)
    predictor.add_all_frames_to_correct_as_cond = True
    # sam2 1.1.0 calls an undefined `_clear_obj_non_cond_mem_around_input` when this is on
    predictor.clear_non_cond_mem_around_input = False


def _read_checkpoint(path: str) -> dict:
    import torch

    if not os.path.isfile(path):
        raise CheckpointError(f"SAM 2 checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything unreadable is a bad checkpoint
        raise CheckpointError(f"cannot read SAM 2 checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise CheckpointError(f"SAM 2 checkpoint {path} has no 'model' state dict (expected {{'model': {{...}}}})")
    return blob["model"]


def _apply_checkpoint(model, sd: dict, path: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or mismatched:

        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {few(mismatched)}")
        raise CheckpointError(f"SAM 2 checkpoint {path} does not match the model config: " + "; ".join(parts))
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot load SAM 2 checkpoint {path}: {e}") from e


def build_predictor(cfg: EngineConfig):
    """Build SAM 2's video predictor. ``cfg.checkpoint`` None gives RANDOM weights (tests only: the caller decides)."""
    import torch  # noqa: F401
    from sam2.build_sam import build_sam2_video_predictor

    # read (and fail on) the checkpoint before spending time on building the model
    sd = _read_checkpoint(cfg.checkpoint) if cfg.checkpoint is not None else None
    predictor = build_sam2_video_predictor(
        cfg.config,
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={int(cfg.image_size)}"],
    )
    if sd is not None:
        _apply_checkpoint(predictor, sd, cfg.checkpoint)
        del sd
    predictor = predictor.to(cfg.device)
    predictor.eval()
    _configure(predictor)
    return predictor


# ---------------------------------------------------------------------------------------------- preprocessing


def preprocess_frame(frame: np.ndarray, image_size: int):
    """8-bit gray (H×W) or RGB (H×W×3) frame -> SAM 2 input tensor (3, S, S), float32, ImageNet-normalised."""
    import torch
    import torch.nn.functional as F

    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {a.dtype}")
    if a.ndim == 2:
        t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)[None, None]
    elif a.ndim == 3 and a.shape[2] == 3:
        t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0).permute(2, 0, 1)[None]
    else:
        raise ValueError(f"frames must be H×W (gray) or H×W×3, got shape {a.shape}")
    if t.shape[-2:] != (image_size, image_size):
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    t = t[0].expand(3, -1, -1) if t.shape[1] == 1 else t[0]
    mean = torch.tensor(IMG_MEAN).view(3, 1, 1)
    std = torch.tensor(IMG_STD).view(3, 1, 1)
    return ((t - mean) / std).contiguous()


class _FrameWindow:
    """``inference_state["images"]`` for one call: global frame index -> preprocessed tensor, made on access."""

    def __init__(self, frames: Sequence[np.ndarray], first_index: int, image_size: int, device):
        self._frames = frames
        self._first = first_index
        self._size = image_size
        self._device = device

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, g: int):
        i = int(g) - self._first
        if not 0 <= i < len(self._frames):
            raise IndexError(
                f"frame {g} is outside this call's window {self._first}..{self._first + len(self._frames) - 1}"
            )
        return preprocess_frame(self._frames[i], self._size).to(self._device)


@contextlib.contextmanager
def _quiet_tqdm():
    """Silence the progress bar of ``propagate_in_video`` (restored afterwards)."""
    import functools

    import sam2.sam2_video_predictor as vp
    from tqdm import tqdm

    with _TQDM_LOCK:
        old = vp.tqdm
        vp.tqdm = functools.partial(tqdm, disable=True)
        try:
            yield
        finally:
            vp.tqdm = old


_TQDM_LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------- resume state


def _dump(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(data: bytes) -> dict:
    import torch

    try:
        rs = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ResumeError(f"corrupt SAM 2 resume state: {type(e).__name__}: {e}") from e
    if not isinstance(rs, dict) or rs.get("format") != RESUME_FORMAT:
        raise ResumeError("not a scarmon SAM 2 resume state")
    if rs.get("version") != RESUME_VERSION:
        raise ResumeError(f"resume state version {rs.get('version')} is not supported (want {RESUME_VERSION})")
    return rs


def describe_resume(data: bytes) -> dict:
    """Summary of a resume state (no tensors): last frame, conditioning frames, prompts, size."""
    rs = _load(data)
    frames = rs["frames"]
    return {
        "last": rs["last"],
        "config": rs["config"],
        "image_size": rs["image_size"],
        "frame_hw": tuple(rs["frame_hw"]),
        "cond_frames": sorted(g for g, r in frames.items() if r["cond"]),
        "memory_frames": sorted(g for g, r in frames.items() if not r["cond"] and r["maskmem_features"] is not None),
        "pointer_frames": sorted(g for g, r in frames.items() if not r["cond"]),
        "prompts": {g: [tuple(p) for p in v] for g, v in rs["prompts"].items()},
        "corrections": list(rs["corrections"]),
        "bytes": len(data),
    }


def _clone(t):
    return None if t is None else t.detach().to("cpu").clone()


# ---------------------------------------------------------------------------------------------------- engine


def _check_points(frame: int, pts) -> tuple[list[list[float]], list[int], list[list[float]]]:
    pts = list(pts)
    if not pts:
        raise ValueError(f"empty prompt list for frame {frame}")
    coords, labels, raw = [], [], []
    for p in pts:
        if len(p) != 3:
            raise ValueError(f"prompt on frame {frame} must be (col, row, label), got {p!r}")
        c, r, lab = float(p[0]), float(p[1]), int(p[2])
        if lab not in (0, 1, 2, 3):  # 2/3: a box's top-left/bottom-right corners, as SAM 2 encodes boxes
            raise ValueError(f"prompt label on frame {frame} must be 1 (scar), 0 (not scar) or a box corner (2, 3), "
                             f"got {p[2]!r}")
        coords.append([c, r])
        labels.append(lab)
        raw.append([c, r, lab])
    return coords, labels, raw


class Sam2Engine:
    """Single-object SAM 2 video tracking over global frame indices, resumable with bounded state."""

    def __init__(self, cfg: EngineConfig, predictor=None):
        self.cfg = cfg
        self.predictor = predictor if predictor is not None else build_predictor(cfg)
        _configure(self.predictor)
        if int(self.predictor.image_size) != int(cfg.image_size):
            raise ValueError(
                f"predictor image_size {self.predictor.image_size} != EngineConfig.image_size {cfg.image_size}"
            )
        p = self.predictor
        self.num_maskmem = int(p.num_maskmem)
        self.max_obj_ptrs = int(p.max_obj_ptrs_in_encoder) if p.use_obj_ptrs_in_encoder else 0
        self.mem_stride = int(p.memory_temporal_stride_for_eval)

    # ---- public API ------------------------------------------------------------------------------------------

    def track(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Sequence[tuple[float, float, int]]],
        *,
        resume: bytes | None = None,
        first_index: int = 0,
    ) -> tuple[list[np.ndarray], bytes]:
        """Track ``frames`` (global indices ``first_index..``); returns one bool mask per frame and the new resume.

        ``prompts``: global frame -> [(col, row, label)] in frame pixels. Prompts on frames of this call become
        conditioning frames; prompts on earlier frames must already be in ``resume`` (new clicks on old frames go
        through :meth:`refine`); prompts on later frames are left for the call that reaches them.
        ``resume=None`` starts fresh: some frame of this call must carry a prompt; if the first prompt lies after
        ``first_index`` the frames before it are tracked backward from it (after the forward pass).
        """
        r = self.track_detailed(frames, prompts, resume=resume, first_index=first_index)
        return r.masks, r.resume

    def refine(
        self,
        frames: Sequence[np.ndarray],
        clicks: Sequence[tuple[float, float, int]],
        *,
        resume: bytes,
        first_index: int,
        prompts: Mapping[int, Sequence[tuple[float, float, int]]] | None = None,
    ) -> tuple[list[np.ndarray], bytes]:
        """Correction clicks on frame ``j = first_index`` (``frames[0]``), then re-propagate over ``frames``.

        ``resume`` must be the state after frame ``j-1`` (or after ``j``): keep a snapshot per frame
        (``track_detailed(..., snapshots=True)``) or re-track from the nearest earlier snapshot. The corrected
        frame becomes a conditioning frame (``add_all_frames_to_correct_as_cond``), so the correction stays in
        memory for every later frame and in every later resume state. Snapshots after ``j-1`` are stale afterwards.
        """
        r = self.refine_detailed(frames, clicks, resume=resume, first_index=first_index, prompts=prompts)
        return r.masks, r.resume

    def track_detailed(self, frames, prompts, *, resume=None, first_index=0, snapshots=False) -> TrackResult:
        return self._run(frames, prompts or {}, resume, int(first_index), None, snapshots)

    def refine_detailed(self, frames, clicks, *, resume, first_index, prompts=None, snapshots=False) -> TrackResult:
        if resume is None:
            raise ResumeError("refine needs the resume state after frame first_index-1 (or first_index)")
        return self._run(frames, prompts or {}, resume, int(first_index), list(clicks), snapshots)

    # ---- internals -------------------------------------------------------------------------------------------

    def _mem_frames(self, f: int) -> set[int]:
        """Non-conditioning memory frames SAM 2 reads when tracking frame f forward (see module docstring)."""
        r = self.mem_stride
        out = {f - 1}
        for t_rel in range(2, self.num_maskmem):
            out.add(((f - 2) // r) * r - (t_rel - 2) * r)
        return {g for g in out if g >= 0}

    def _new_state(self, frames, first_index: int, hw: tuple[int, int], num_frames: int) -> dict:
        p = self.predictor
        dev = p.device
        st = {
            "images": _FrameWindow(frames, first_index, p.image_size, dev),
            "num_frames": num_frames,
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": False,
            "video_height": hw[0],
            "video_width": hw[1],
            "device": dev,
            "storage_device": dev,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }
        p._obj_id_to_idx(st, OBJ_ID)  # creates the per-object containers (obj_idx 0)
        return st

    def _check_resume(self, rs: dict, hw: tuple[int, int]) -> None:
        if rs["config"] != self.cfg.config or int(rs["image_size"]) != int(self.predictor.image_size):
            raise ResumeError(
                f"resume state was made with {rs['config']} at image_size {rs['image_size']}, "
                f"this engine runs {self.cfg.config} at {self.predictor.image_size}"
            )
        if tuple(rs["frame_hw"]) != tuple(hw):
            raise ResumeError(f"resume state is for {tuple(rs['frame_hw'])} frames, got {tuple(hw)}")
        if (rs["num_maskmem"], rs["max_obj_ptrs"], rs["mem_stride"]) != (
            self.num_maskmem,
            self.max_obj_ptrs,
            self.mem_stride,
        ):
            raise ResumeError("resume state was made with different SAM 2 memory settings")

    def _install(self, st: dict, rs: dict) -> None:
        dev = st["device"]
        pos = [rs["maskmem_pos_enc"].to(dev)]
        st["constants"]["maskmem_pos_enc"] = pos
        od = st["output_dict_per_obj"][0]
        tracked = st["frames_tracked_per_obj"][0]
        for g, rec in rs["frames"].items():
            mem = rec["maskmem_features"]
            out = {
                "maskmem_features": None if mem is None else mem.to(dev),
                "maskmem_pos_enc": None if mem is None else pos,
                "pred_masks": None if rec["pred_masks"] is None else rec["pred_masks"].to(dev),
                "obj_ptr": rec["obj_ptr"].to(dev),
                "object_score_logits": rec["object_score_logits"].to(dev),
            }
            od["cond_frame_outputs" if rec["cond"] else "non_cond_frame_outputs"][int(g)] = out
            tracked[int(g)] = {"reverse": False}
        for g, pi in rs["points"].items():
            st["point_inputs_per_obj"][0][int(g)] = {
                "point_coords": pi["point_coords"].to(dev),
                "point_labels": pi["point_labels"].to(dev),
            }

    def _export(self, st: dict, last: int, hw, prompts: dict, corrections: list[int]) -> bytes:
        od = st["output_dict_per_obj"][0]
        tracked = st["frames_tracked_per_obj"][0]
        mem_needed = self._mem_frames(last) | self._mem_frames(last + 1) | {last}
        ptr_needed = set(range(last - self.max_obj_ptrs + 1, last + 1))

        def pack(out, cond, keep_mem, keep_masks):
            return {
                "cond": cond,
                "maskmem_features": _clone(out["maskmem_features"]) if keep_mem else None,
                "pred_masks": _clone(out["pred_masks"]) if keep_masks else None,
                "obj_ptr": _clone(out["obj_ptr"]),
                "object_score_logits": _clone(out["object_score_logits"]),
            }

        frames = {}
        for g, out in od["cond_frame_outputs"].items():
            if g <= last:
                frames[int(g)] = pack(out, True, True, g == last)
        for g, out in od["non_cond_frame_outputs"].items():
            if g > last or g in frames or tracked.get(g, {}).get("reverse", False):
                continue  # future, or tracked backward (never memory for forward tracking)
            if g in mem_needed or g in ptr_needed:
                frames[int(g)] = pack(out, False, g in mem_needed, g == last)
        points = {
            int(g): {"point_coords": _clone(pi["point_coords"]), "point_labels": _clone(pi["point_labels"])}
            for g, pi in st["point_inputs_per_obj"][0].items()
            if g in frames and frames[g]["cond"]
        }
        rs = {
            "format": RESUME_FORMAT,
            "version": RESUME_VERSION,
            "config": self.cfg.config,
            "image_size": int(self.predictor.image_size),
            "frame_hw": [int(hw[0]), int(hw[1])],
            "num_maskmem": self.num_maskmem,
            "max_obj_ptrs": self.max_obj_ptrs,
            "mem_stride": self.mem_stride,
            "last": int(last),
            "maskmem_pos_enc": _clone(st["constants"]["maskmem_pos_enc"][0]),
            "frames": frames,
            "points": points,
            "prompts": {int(g): [list(p) for p in v] for g, v in prompts.items() if g in points},
            "corrections": sorted(int(g) for g in corrections if g <= last),
        }
        return _dump(rs)

    def _run(self, frames, prompts, resume, first_index, clicks, snapshots) -> TrackResult:
        import torch

        p = self.predictor
        frames = list(frames)
        if not frames:
            raise ValueError("no frames to track")
        if first_index < 0:
            raise ValueError(f"first_index must be >= 0, got {first_index}")
        hw = tuple(np.asarray(frames[0]).shape[:2])
        for i, fr in enumerate(frames):
            if tuple(np.asarray(fr).shape[:2]) != hw:
                raise ValueError(f"frame {first_index + i} has shape {np.asarray(fr).shape}, expected {hw}")
        last = first_index + len(frames) - 1

        rs = None
        if resume is not None:
            rs = _load(resume)
            self._check_resume(rs, hw)
            if clicks is None and first_index != rs["last"] + 1:
                raise ResumeError(
                    f"resume state ends at frame {rs['last']}: the next call must start at {rs['last'] + 1}, "
                    f"not {first_index}"
                )
            if clicks is not None and first_index not in (rs["last"], rs["last"] + 1):
                raise ResumeError(
                    f"refine on frame {first_index} needs the resume state after frame {first_index - 1} "
                    f"(or {first_index}); this one ends at {rs['last']}"
                )
        stored = {int(g): [list(x) for x in v] for g, v in (rs["prompts"] if rs else {}).items()}
        corrections = list(rs["corrections"]) if rs else []

        # prompts: check earlier ones against the resume state, keep this call's, leave later ones
        new_prompts: dict[int, tuple] = {}
        for g, pts in prompts.items():
            g = int(g)
            coords, labels, raw = _check_points(g, pts)
            if g < first_index or (clicks is not None and g == first_index and g in stored):
                have = stored.get(g)
                if have is None or have[: len(raw)] != raw:
                    raise ValueError(
                        f"prompt on frame {g} is not part of the resume state (it ends at frame "
                        f"{rs['last'] if rs else None}); add clicks on tracked frames with refine()"
                    )
            elif g <= last:
                if clicks is not None and g == first_index:
                    raise ValueError("give the clicks on the refined frame as `clicks`, not `prompts`")
                new_prompts[g] = (coords, labels, raw)
        if rs is None and not new_prompts:
            raise ValueError(
                f"a fresh track needs a prompt on one of frames {first_index}..{last} (got prompts on "
                f"{sorted(int(g) for g in prompts)})"
            )
        if clicks is not None:
            c_coords, c_labels, c_raw = _check_points(first_index, clicks)

        num_frames = max(last + 1, self.max_obj_ptrs, 1)
        st = self._new_state(frames, first_index, hw, num_frames)
        if rs is not None:
            self._install(st, rs)

        logits: dict[int, np.ndarray] = {}
        snaps: dict[int, bytes] = {}
        all_prompts = dict(stored)

        def run(start: int, count: int, reverse: bool = False):
            gen = p.propagate_in_video(st, start_frame_idx=start, max_frame_num_to_track=count, reverse=reverse)
            for g, _ids, video_res in gen:
                logits[int(g)] = video_res[0, 0].float().cpu().numpy()
                if snapshots and not reverse:
                    snaps[int(g)] = self._export(st, int(g), hw, all_prompts, corrections)

        with torch.inference_mode(), _autocast(p.device), _quiet_tqdm():
            for g, (coords, labels, raw) in sorted(new_prompts.items()):
                # untracked frames: initial conditioning frames (segmented from the clicks alone, like SAM)
                p.add_new_points_or_box(st, g, OBJ_ID, points=coords, labels=labels, clear_old_points=True)
                all_prompts[g] = raw
            if clicks is not None:
                j = first_index
                if j not in st["frames_tracked_per_obj"][0]:
                    run(j, 0)  # track j as before, from the memory of frames < j
                # a tracked frame: the clicks correct its current prediction (fed back as mask logits), with
                # memory; add_all_frames_to_correct_as_cond makes it a conditioning frame for good
                p.add_new_points_or_box(st, j, OBJ_ID, points=c_coords, labels=c_labels, clear_old_points=False)
                all_prompts[j] = stored.get(j, []) + c_raw
                corrections = sorted(set(corrections) | {j})
                run(j, last - j)
            elif rs is not None:
                run(first_index, last - first_index)
            else:
                start = min(new_prompts)
                run(start, last - start)
                if start > first_index:
                    run(start, start - first_index, reverse=True)
            resume_out = self._export(st, last, hw, all_prompts, corrections)
            od = st["output_dict_per_obj"][0]
            scores = []
            for g in range(first_index, last + 1):
                out = od["cond_frame_outputs"].get(g) or od["non_cond_frame_outputs"].get(g)
                scores.append(float(out["object_score_logits"].float().reshape(-1)[0]))

        idx = list(range(first_index, last + 1))
        lg = [logits[g] for g in idx]
        return TrackResult(
            frame_indices=idx,
            masks=[x > 0 for x in lg],
            logits=lg,
            object_scores=scores,
            resume=resume_out,
            snapshots=snaps,
        )
