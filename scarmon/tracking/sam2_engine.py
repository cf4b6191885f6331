"""SAM 2 video engine over in-memory 8-bit frames, with a bounded resume state and causal prompts.

The frames of a site are a video; SAM 2's video predictor tracks the scar from prompt clicks (Zhou, Mei et al.
2025, arXiv 2510.10084). A monitoring series only ever grows, so the engine never reloads the history: each call
tracks the new frames and returns a *resume state* (bytes) holding exactly what SAM 2 reads to continue.

Prompts and corrections are *events* on frames, applied in time order as a monitoring series means (causal):

* a fresh track starts on the first frame with a site prompt ``p``: its clicks (with any correction clicks on the
  same frame) make the initial conditioning frame; frames before ``p`` are then tracked backward from it, and a
  correction on one of them is applied when the backward pass reaches it (SAM 2's refinement: the clicks are added
  to the tracked frame, with its memory and its current mask as the previous mask);
* forward, the engine tracks up to the next event frame, adds its clicks (site prompt and corrections merged) to
  the tracked frame the same way, and continues. A frame that got clicks is a conditioning frame for good
  (``add_all_frames_to_correct_as_cond``): it stays in memory for every later frame.

SAM 2 attends to the memory of *every* conditioning frame it holds, future ones included, so adding all prompts of
a call before propagating (SAM 2's interactive default) would make a frame depend on how the series is cut into
calls. Causal events never do: every call, and every split of a call, sees exactly the same memory for each frame.

What SAM 2 reads when it tracks frame ``f`` forward (``SAM2Base._prepare_memory_conditioned_features``):

* the memory (``maskmem_features``) of every conditioning frame (``max_cond_frames_in_attn`` is -1), and their
  object pointers when they lie in the past;
* the memory of the ``num_maskmem - 1`` (6) frames ``f-1 .. f-6`` (stride 1);
* the object pointers of frames ``f-1 .. f-(max_obj_ptrs_in_encoder-1)`` (15);
* the frame-index *differences* between ``f`` and those frames (temporal positional encodings).

The resume state after frame ``L`` keeps what frame ``L+1`` needs, whether it is tracked or gets clicks:
conditioning frames (memory + pointer), the memory of frames ``L-5 .. L``, the pointers of frames ``L-14 .. L``,
the (constant) memory positional encoding, and the log of the events applied so far (to refuse a resume whose
past prompts differ from the caller's: :meth:`Sam2Engine.first_changed`). A correction on an already tracked frame
``j`` is applied by re-tracking from a state before ``j`` (any earlier one), which is exactly what one call from
scratch with that correction does. Its size and the cost of one new frame depend on the number of conditioning
frames (prompts + corrections), never on the history length.

Frame indices are GLOBAL indices of the site sequence, used unchanged as SAM 2's frame keys: SAM 2 only uses
them as dictionary keys and through differences, so nothing needs re-indexing. The image tensor of a call is a
lazy window that holds (and preprocesses, on the model's device) only the frames of that call. ``num_frames`` of
the inference state is ``max(last + 1, max_obj_ptrs_in_encoder)``, so the pointer window is always the full 16
(what SAM 2 does on any video of 16+ frames): results then do not depend on how the series is cut into calls.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scarmon.errors import ScarmonError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EngineConfig",
    "ResumeError",
    "Sam2Engine",
    "TrackResult",
    "available_configs",
    "build_predictor",
    "compare_resume",
    "describe_resume",
    "preprocess_frame",
]

OBJ_ID = 1
RESUME_FORMAT = "scarmon-sam2-resume"
RESUME_VERSION = 2
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
NO_OBJ_SCORE = -1024.0  # sam2.modeling.sam2_base.NO_OBJ_SCORE: logits of frames where the object is absent

Click = tuple[float, float, int]
Clicks = Sequence[Click]
Predictor = Any  # sam2.sam2_video_predictor.SAM2VideoPredictor (sam2 ships no type information)


class CheckpointError(ScarmonError, RuntimeError):
    """A SAM 2 checkpoint file is missing, unreadable, or does not match the model config."""


class ConfigError(CheckpointError):
    """The SAM 2 model config name is not one of the sam2 package's configs."""


class ResumeError(ValueError):
    """A resume state is corrupt, or does not fit the engine or the call."""


@dataclass(frozen=True)
class EngineConfig:
    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    checkpoint: str | None = None
    device: str = "cpu"
    image_size: int = 1024
    compile: bool = False  # SAM 2's vos_optimized predictor (torch.compile of its components; CUDA)


@dataclass
class TrackResult:
    frame_indices: list[int]
    masks: list[np.ndarray]  # bool H×W per frame
    logits: list[np.ndarray]  # float32 H×W mask logits per frame (frame resolution)
    object_scores: list[float]  # SAM 2 object-score logit per frame (> 0: object present)
    resume: bytes
    snapshots: dict[int, bytes] = field(default_factory=dict)  # global frame -> resume state after it


# --------------------------------------------------------------------------------------------------- building


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    import torch

    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _configure(predictor: Predictor) -> None:
    # no sam2._C on these machines: hole filling needs it (the builder forces fill_hole_area=8)
    predictor.fill_hole_area = 0
    # corrective clicks become conditioning frames, so they stick (sam2 issues 546, 719, 731)
    predictor.add_all_frames_to_correct_as_cond = True
    # sam2 1.1.0 calls an undefined `_clear_obj_non_cond_mem_around_input` when this is on
    predictor.clear_non_cond_mem_around_input = False


def available_configs() -> list[str]:
    """Model config names the installed sam2 package ships (``configs/sam2.1/sam2.1_hiera_t.yaml``, ...)."""
    import sam2

    root = os.path.dirname(sam2.__file__)
    out = []
    for d, _dirs, files in os.walk(os.path.join(root, "configs")):
        for f in files:
            if f.endswith(".yaml"):
                out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return sorted(out)


def _suggest_config(checkpoint: str | None, configs: Sequence[str]) -> str | None:
    """The config matching a checkpoint file name as Meta names them (``sam2.1_hiera_tiny.pt`` -> ``..._t.yaml``)."""
    if not checkpoint:
        return None
    name = os.path.basename(checkpoint).lower()
    version = "sam2.1" if "2.1" in name else "sam2"
    for word, short in (
        ("tiny", "t"),
        ("small", "s"),
        ("base_plus", "b+"),
        ("large", "l"),
        ("_t.", "t"),
        ("_s.", "s"),
        ("b+", "b+"),
        ("_l.", "l"),
    ):
        if word in name:
            want = f"configs/{version}/{version}_hiera_{short}.yaml"
            return want if want in configs else None
    return None


def _check_config(cfg: EngineConfig) -> None:
    configs = available_configs()
    if cfg.config in configs:
        return
    hint = _suggest_config(cfg.checkpoint, configs)
    raise ConfigError(
        f"SAM 2 config {cfg.config!r} is not one of the sam2 package's configs"
        + (f"; for checkpoint {os.path.basename(cfg.checkpoint or '')} use {hint!r}" if hint else "")
        + f" (set SCARMON_SAM2_CONFIG; available: {', '.join(c for c in configs if 'training' not in c)})"
    )


def _read_checkpoint(path: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise CheckpointError(f"SAM 2 checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything unreadable is a bad checkpoint
        raise CheckpointError(f"cannot read SAM 2 checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise CheckpointError(f"SAM 2 checkpoint {path} has no 'model' state dict (expected {{'model': {{...}}}})")
    model: dict[str, Any] = blob["model"]
    return model


def _apply_checkpoint(model: Predictor, sd: dict[str, Any], path: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or mismatched:

        def few(keys: list[str]) -> str:
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


def _silence_tqdm() -> None:
    """Silence the progress bar of ``propagate_in_video`` for good (no per-call patching, so no lock)."""
    import sam2.sam2_video_predictor as vp
    from tqdm import tqdm

    if not getattr(vp.tqdm, "_scarmon_quiet", False):
        quiet = functools.partial(tqdm, disable=True)
        quiet._scarmon_quiet = True  # type: ignore[attr-defined]  # marker on a partial object, read back above
        vp.tqdm = quiet


def build_predictor(cfg: EngineConfig) -> Predictor:
    """Build SAM 2's video predictor. ``cfg.checkpoint`` None gives RANDOM weights (tests only: the caller decides)."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    _check_config(cfg)
    # read (and fail on) the checkpoint before spending time on building the model
    sd = _read_checkpoint(cfg.checkpoint) if cfg.checkpoint is not None else None
    predictor = build_sam2_video_predictor(
        cfg.config,
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={int(cfg.image_size)}"],
        vos_optimized=cfg.compile,
    )
    if sd is not None and cfg.checkpoint is not None:
        _apply_checkpoint(predictor, sd, cfg.checkpoint)
        del sd
    predictor = predictor.to(cfg.device)
    predictor.eval()
    _configure(predictor)
    if torch.device(cfg.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # SAM 2's own demo setting: ~2x faster matmuls on Ampere+
        torch.backends.cudnn.allow_tf32 = True
    return predictor


_SHARED: dict[EngineConfig, Predictor] = {}
_SHARED_LOCK = threading.Lock()


def shared_predictor(cfg: EngineConfig) -> Predictor:
    """One predictor per configuration and process, reused by every site and tick (building costs seconds)."""
    with _SHARED_LOCK:
        p = _SHARED.get(cfg)
        if p is None:
            p = build_predictor(cfg)
            if cfg.compile:  # compile now (minutes), not on the first site of the first tick
                Sam2Engine(cfg, p).warmup()
            _SHARED[cfg] = p
        return p


# ---------------------------------------------------------------------------------------------- preprocessing


def preprocess_frame(frame: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """8-bit gray (H×W) or RGB (H×W×3) frame -> SAM 2 input tensor (3, S, S), float32, ImageNet-normalised.

    Only the uint8 frame crosses to ``device``; scaling, resizing and normalising run there."""
    import torch
    import torch.nn.functional as F

    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {a.dtype}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"frames must be H×W (gray) or H×W×3, got shape {a.shape}")
    u8 = torch.from_numpy(np.ascontiguousarray(a)).to(device)
    if a.ndim == 2:
        t = u8.float().div_(255.0)[None, None]
    else:
        t = u8.float().div_(255.0).permute(2, 0, 1)[None]
    if t.shape[-2:] != (image_size, image_size):
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    t = t[0].expand(3, -1, -1) if t.shape[1] == 1 else t[0]
    mean = torch.tensor(IMG_MEAN, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMG_STD, device=t.device).view(3, 1, 1)
    return ((t - mean) / std).contiguous()


class _FrameWindow:
    """``inference_state["images"]`` for one call: global frame index -> preprocessed tensor, made on access."""

    def __init__(self, frames: Sequence[np.ndarray], first_index: int, image_size: int, device: torch.device):
        self._frames = frames
        self._first = first_index
        self._size = image_size
        self._device = device

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, g: int) -> torch.Tensor:
        i = int(g) - self._first
        if not 0 <= i < len(self._frames):
            raise IndexError(
                f"frame {g} is outside this call's window {self._first}..{self._first + len(self._frames) - 1}"
            )
        return preprocess_frame(self._frames[i], self._size, self._device)


# ---------------------------------------------------------------------------------------------- resume state


def _dump(obj: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(data: bytes) -> dict[str, Any]:
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


def describe_resume(data: bytes) -> dict[str, Any]:
    """Summary of a resume state (no tensors): last frame, conditioning frames, events, size."""
    rs = _load(data)
    frames = rs["frames"]
    events = rs["events"]
    return {
        "last": rs["last"],
        "config": rs["config"],
        "image_size": rs["image_size"],
        "frame_hw": tuple(rs["frame_hw"]),
        "cond_frames": sorted(g for g, r in frames.items() if r["cond"]),
        "memory_frames": sorted(g for g, r in frames.items() if not r["cond"] and r["maskmem_features"] is not None),
        "pointer_frames": sorted(g for g, r in frames.items() if not r["cond"]),
        "prompts": {g: [tuple(p) for p in e["prompt"] + e["correction"]] for g, e in sorted(events.items())},
        "site_prompts": sorted(g for g, e in events.items() if e["prompt"]),
        "corrections": sorted(g for g, e in events.items() if e["correction"]),
        "bytes": len(data),
    }


def compare_resume(a: bytes, b: bytes) -> list[str]:
    """Differences between two resume states (tensors compared exactly); empty when they are identical."""
    import torch

    ra, rb = _load(a), _load(b)
    out: list[str] = []
    for k in sorted(set(ra) | set(rb)):
        if k in ("frames", "maskmem_pos_enc", "fill"):
            continue
        if ra.get(k) != rb.get(k):
            out.append(f"{k}: {ra.get(k)!r} != {rb.get(k)!r}")
    fill_a, fill_b = ra.get("fill"), rb.get("fill")
    if fill_a is None or fill_b is None:
        if (fill_a is None) != (fill_b is None):
            out.append("fill differs")
    elif not torch.equal(fill_a, fill_b):
        out.append("fill differs")
    if not torch.equal(ra["maskmem_pos_enc"], rb["maskmem_pos_enc"]):
        out.append("maskmem_pos_enc differs")
    fa, fb = ra["frames"], rb["frames"]
    if set(fa) != set(fb):
        out.append(f"frames {sorted(fa)} != {sorted(fb)}")
    for g in sorted(set(fa) & set(fb)):
        for key in ("cond", "maskmem_features", "obj_ptr"):
            x, y = fa[g][key], fb[g][key]
            if isinstance(x, bool) or x is None or y is None:
                same = x is y or x == y
            else:
                same = x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))
            if not same:
                out.append(f"frame {g}: {key} differs")
    return out


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu").clone()


def _torch_from(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a).copy())


def _fill_invalid(frame: np.ndarray, valid: np.ndarray, last_clear: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The frame SAM 2 sees (invalid pixels from their last clear value) and the last clear values after it."""
    a = np.asarray(frame)
    if valid.shape != a.shape[:2]:
        raise ValueError(f"validity mask of shape {valid.shape} for a frame of shape {a.shape}")
    v = valid if a.ndim == 2 else valid[..., None]
    if last_clear is None:
        clear = a[valid]
        last_clear = np.broadcast_to(np.median(clear, axis=0) if clear.size else 128, a.shape).astype(np.uint8)
    seen = np.where(v, a, last_clear).astype(np.uint8)
    return seen, seen


# ---------------------------------------------------------------------------------------------------- engine


def _check_points(frame: int, pts: Clicks) -> list[list[float]]:
    pts = list(pts)
    raw = []
    for p in pts:
        if len(p) != 3:
            raise ValueError(f"prompt on frame {frame} must be (col, row, label), got {p!r}")
        c, r, lab = float(p[0]), float(p[1]), int(p[2])
        if lab not in (0, 1, 2, 3):  # 2/3: a box's top-left/bottom-right corners, as SAM 2 encodes boxes
            raise ValueError(
                f"prompt label on frame {frame} must be 1 (scar), 0 (not scar) or a box corner (2, 3), got {p[2]!r}"
            )
        raw.append([c, r, float(lab)])
    return raw


@dataclass
class _Event:
    prompt: list[list[float]]
    correction: list[list[float]]

    def clicks(self) -> list[list[float]]:
        # box corners (labels 2, 3) must come first for SAM 2's prompt encoder; a site prompt comes before corrections
        both = self.prompt + self.correction
        return [p for p in both if p[2] >= 2] + [p for p in both if p[2] < 2]

    def log(self) -> dict[str, list[list[float]]]:
        return {"prompt": self.prompt, "correction": self.correction}


def _events(prompts: Mapping[int, Clicks], corrections: Mapping[int, Clicks] | None) -> dict[int, _Event]:
    out: dict[int, _Event] = {}
    for g, pts in prompts.items():
        if raw := _check_points(int(g), pts):
            out.setdefault(int(g), _Event([], [])).prompt.extend(raw)
    for g, pts in (corrections or {}).items():
        if raw := _check_points(int(g), pts):
            out.setdefault(int(g), _Event([], [])).correction.extend(raw)
    return out


def _first_difference(
    log: Mapping[int, Mapping[str, list[list[float]]]], events: Mapping[int, _Event], upto: int
) -> int | None:
    """First frame <= upto whose events differ between a resume state's log and the caller's events."""
    frames = {g for g in log if g <= upto} | {g for g in events if g <= upto}
    for g in sorted(frames):
        have = log.get(g)
        want = events[g].log() if g in events else None
        if have is None or want is None or have["prompt"] != want["prompt"] or have["correction"] != want["correction"]:
            return g
    return None


def sam2_inference_state(images: Any, num_frames: int, hw: tuple[int, int], device: Any) -> dict[str, Any]:
    """The inference-state dict SAM 2's `init_state` builds, over frames already loaded: `images` is a tensor of
    preprocessed frames or a lazy window indexable by frame (`_FrameWindow`)."""
    return {
        "images": images,
        "num_frames": num_frames,
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": hw[0],
        "video_width": hw[1],
        "device": device,
        "storage_device": device,
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


class Sam2Engine:
    """Single-object SAM 2 video tracking over global frame indices, resumable with bounded state."""

    def __init__(self, cfg: EngineConfig, predictor: Predictor | None = None):
        self.cfg = cfg
        self.predictor = predictor if predictor is not None else build_predictor(cfg)
        _configure(self.predictor)
        _silence_tqdm()
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
        prompts: Mapping[int, Clicks],
        *,
        resume: bytes | None = None,
        first_index: int = 0,
        corrections: Mapping[int, Clicks] | None = None,
    ) -> tuple[list[np.ndarray], bytes]:
        """Track ``frames`` (global indices ``first_index..``); returns one bool mask per frame and the new resume.

        ``prompts`` (site prompts) and ``corrections`` (clicks added after tracking): global frame ->
        [(col, row, label)] in frame pixels. Events on frames of this call are applied in time order (see the
        module docstring); events on earlier frames must be the ones the resume state was made with (else
        :class:`ResumeError`; :meth:`first_changed` says where to re-track from); later ones wait for the call
        that reaches them. ``resume=None`` starts fresh: some frame of this call must carry a site prompt; frames
        before the first one are tracked backward from it. ``resume`` must be the state after ``first_index - 1``.
        """
        r = self.track_detailed(frames, prompts, resume=resume, first_index=first_index, corrections=corrections)
        return r.masks, r.resume

    def refine(
        self,
        frames: Sequence[np.ndarray],
        clicks: Clicks,
        *,
        resume: bytes | None,
        first_index: int,
        prompts: Mapping[int, Clicks] | None = None,
    ) -> tuple[list[np.ndarray], bytes]:
        """Correction ``clicks`` on frame ``first_index`` (``frames[0]``), re-tracked from the state before it.

        The same as :meth:`track` with ``corrections={first_index: clicks}``: SAM 2 tracks the frame from its
        memory, the clicks refine that prediction, and the frame becomes a conditioning frame for good."""
        r = self.refine_detailed(frames, clicks, resume=resume, first_index=first_index, prompts=prompts)
        return r.masks, r.resume

    def track_detailed(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Clicks] | None,
        *,
        resume: bytes | None = None,
        first_index: int = 0,
        corrections: Mapping[int, Clicks] | None = None,
        snapshots: bool | Collection[int] = False,
        valid: Sequence[np.ndarray] | None = None,
    ) -> TrackResult:
        """:meth:`track` with logits, object scores and resume states after frames (``snapshots``: True for every
        forward-tracked frame, or a collection of global frame indices).

        ``valid`` (bool H×W per frame, False where the pixel was not seen clear): SAM 2 then sees invalid pixels
        filled with the pixel's last clear value (carried in the resume state), not the placeholder value of the
        8-bit frame; pixels never seen clear take the median of the frame's clear pixels."""
        return self._run(
            list(frames),
            _events(prompts or {}, corrections),
            resume,
            int(first_index),
            snapshots,
            None if valid is None else list(valid),
        )

    def refine_detailed(
        self,
        frames: Sequence[np.ndarray],
        clicks: Clicks,
        *,
        resume: bytes | None,
        first_index: int,
        prompts: Mapping[int, Clicks] | None = None,
        corrections: Mapping[int, Clicks] | None = None,
        snapshots: bool | Collection[int] = False,
    ) -> TrackResult:
        merged = {int(g): list(v) for g, v in (corrections or {}).items()}
        merged[int(first_index)] = merged.get(int(first_index), []) + list(clicks)
        if resume is not None:
            stored = _load(resume)["events"]
            prompts = {
                **{g: [tuple(p) for p in e["prompt"]] for g, e in stored.items() if e["prompt"]},
                **(prompts or {}),
            }
            for g, e in stored.items():
                if e["correction"] and g not in merged:
                    merged[g] = [(p[0], p[1], int(p[2])) for p in e["correction"]]
        return self.track_detailed(
            frames, prompts, resume=resume, first_index=first_index, corrections=merged, snapshots=snapshots
        )

    def first_changed(
        self, resume: bytes, prompts: Mapping[int, Clicks], corrections: Mapping[int, Clicks] | None = None
    ) -> int | None:
        """First frame, up to the resume state's last one, whose prompts or corrections differ from the ones the
        state was made with (None: the state is valid for these events). Re-track from a state before it."""
        rs = _load(resume)
        return _first_difference(rs["events"], _events(prompts, corrections), int(rs["last"]))

    def warmup(self, n: int = 4, hw: int = 64) -> None:
        """Run a few synthetic frames (a prompt, tracking, a correction) so compiled kernels are built up front."""
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (hw, hw), dtype=np.uint8) for _ in range(n)]
        self.track_detailed(frames, {0: [(hw / 2, hw / 2, 1)]}, corrections={n - 1: [(2.0, 2.0, 0)]})

    # ---- internals -------------------------------------------------------------------------------------------

    def _mem_frames(self, f: int) -> set[int]:
        """Non-conditioning memory frames SAM 2 reads when tracking frame f forward (see module docstring)."""
        r = self.mem_stride
        out = {f - 1}
        for t_rel in range(2, self.num_maskmem):
            out.add(((f - 2) // r) * r - (t_rel - 2) * r)
        return {g for g in out if g >= 0}

    def _new_state(
        self, frames: Sequence[np.ndarray], first_index: int, hw: tuple[int, int], num_frames: int
    ) -> dict[str, Any]:
        p = self.predictor
        st = sam2_inference_state(_FrameWindow(frames, first_index, p.image_size, p.device), num_frames, hw, p.device)
        p._obj_id_to_idx(st, OBJ_ID)  # creates the per-object containers (obj_idx 0)
        return st

    def _check_resume(self, rs: dict[str, Any], hw: tuple[int, int]) -> None:
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

    def _install(self, st: dict[str, Any], rs: dict[str, Any]) -> None:
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
                "pred_masks": None,  # only read for a frame that gets clicks: never one before the call
                "obj_ptr": rec["obj_ptr"].to(dev),
                "object_score_logits": None,
            }
            od["cond_frame_outputs" if rec["cond"] else "non_cond_frame_outputs"][int(g)] = out
            tracked[int(g)] = {"reverse": False}

    def _export(
        self, st: dict[str, Any], last: int, hw: tuple[int, int], log: dict[int, _Event], fill: np.ndarray | None = None
    ) -> bytes:
        od = st["output_dict_per_obj"][0]
        mem_needed = self._mem_frames(last + 1)
        ptr_needed = set(range(last - self.max_obj_ptrs + 2, last + 1))

        def pack(out: dict[str, Any], cond: bool, keep_mem: bool) -> dict[str, Any]:
            return {
                "cond": cond,
                "maskmem_features": _clone(out["maskmem_features"]) if keep_mem else None,
                "obj_ptr": _clone(out["obj_ptr"]),
            }

        frames: dict[int, dict[str, Any]] = {}
        for g, out in od["cond_frame_outputs"].items():
            if g <= last:
                frames[int(g)] = pack(out, True, True)
        for g, out in od["non_cond_frame_outputs"].items():
            if g > last or g in frames:
                continue
            if g in mem_needed or g in ptr_needed:
                frames[int(g)] = pack(out, False, g in mem_needed)
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
            "events": {int(g): e.log() for g, e in sorted(log.items()) if g <= last},
            "fill": None if fill is None else _torch_from(fill),
        }
        return _dump(rs)

    def _run(
        self,
        frames: list[np.ndarray],
        events: dict[int, _Event],
        resume: bytes | None,
        first_index: int,
        snapshots: bool | Collection[int],
        valid: list[np.ndarray] | None = None,
    ) -> TrackResult:
        import torch

        p = self.predictor
        if not frames:
            raise ValueError("no frames to track")
        if first_index < 0:
            raise ValueError(f"first_index must be >= 0, got {first_index}")
        shape = np.asarray(frames[0]).shape
        hw = (int(shape[0]), int(shape[1]))
        for i, fr in enumerate(frames):
            if tuple(np.asarray(fr).shape[:2]) != hw:
                raise ValueError(f"frame {first_index + i} has shape {np.asarray(fr).shape}, expected {hw}")
        last = first_index + len(frames) - 1

        rs = None
        past: dict[int, _Event] = {}
        if resume is not None:
            rs = _load(resume)
            self._check_resume(rs, hw)
            if first_index != rs["last"] + 1:
                raise ResumeError(
                    f"resume state ends at frame {rs['last']}: the next call must start at {rs['last'] + 1}, "
                    f"not {first_index} (a correction on a tracked frame re-tracks from a state before it)"
                )
            d = _first_difference(rs["events"], events, first_index - 1)
            if d is not None:
                raise ResumeError(
                    f"the prompts or corrections on frame {d} are not the ones this resume state (after frame "
                    f"{rs['last']}) was made with: re-track from a state before frame {d}"
                )
            past = {int(g): _Event(list(e["prompt"]), list(e["correction"])) for g, e in rs["events"].items()}
        elif any(g < first_index for g in events):
            raise ValueError(
                f"a fresh track from frame {first_index} cannot take prompts or corrections on earlier frames "
                f"{sorted(g for g in events if g < first_index)}"
            )
        fills: dict[int, np.ndarray] = {}
        if valid is not None:
            if len(valid) != len(frames):
                raise ValueError(f"{len(valid)} validity masks for {len(frames)} frames")
            prev = rs["fill"].numpy() if rs is not None and rs.get("fill") is not None else None
            frames = list(frames)
            for i, v in enumerate(valid):
                frames[i], prev = _fill_invalid(frames[i], np.asarray(v, dtype=bool), prev)
                fills[first_index + i] = prev
        here = {g: e for g, e in events.items() if first_index <= g <= last}
        log = {**past, **here}
        start: int | None = None
        if rs is None:
            start = min((g for g, e in here.items() if e.prompt), default=None)
            if start is None:
                raise ValueError(
                    f"a fresh track needs a site prompt on one of frames {first_index}..{last} (got prompts on "
                    f"{sorted(g for g, e in events.items() if e.prompt)})"
                )

        num_frames = max(last + 1, self.max_obj_ptrs, 1)
        st = self._new_state(frames, first_index, hw, num_frames)
        if rs is not None:
            self._install(st, rs)

        logits: dict[int, torch.Tensor] = {}
        snaps: dict[int, bytes] = {}
        snap_set = None if isinstance(snapshots, bool) else frozenset(int(g) for g in snapshots)

        def want_snap(g: int) -> bool:
            return snapshots is True if snap_set is None else g in snap_set

        def run(a: int, b: int, reverse: bool, *, pending: bool = False) -> None:
            """Frames a..b (b <= a when reverse) through SAM 2; ``pending``: b gets clicks next (no snapshot yet)."""
            gen = p.propagate_in_video(st, start_frame_idx=a, max_frame_num_to_track=abs(b - a), reverse=reverse)
            for g, _ids, video_res in gen:
                g = int(g)
                logits[g] = video_res[0, 0]
                if not reverse and want_snap(g) and not (pending and g == b):
                    snaps[g] = self._export(st, g, hw, log, fills.get(g))

        def add(g: int) -> None:
            c = here[g].clicks()
            _, _, video_res = p.add_new_points_or_box(
                st, g, OBJ_ID, points=[q[:2] for q in c], labels=[int(q[2]) for q in c], clear_old_points=True
            )
            logits[g] = video_res[0, 0]

        def sweep(a: int, b: int, stops: list[int], reverse: bool = False) -> None:
            """Track a..b; at each stop (in order), track up to it, add its clicks, and continue from it."""
            for e in stops:
                run(a, e, reverse, pending=True)
                add(e)
                a = e
            run(a, b, reverse)

        with torch.inference_mode(), _autocast(p.device):
            if start is not None:
                add(start)  # the first site prompt: the initial conditioning frame, from its clicks alone
                if start > first_index:
                    sweep(start, first_index, sorted((g for g in here if g < start), reverse=True), reverse=True)
                sweep(start, last, sorted(g for g in here if g > start))
            else:
                sweep(first_index, last, sorted(here))
            resume_out = snaps[last] if last in snaps else self._export(st, last, hw, log, fills.get(last))
            od = st["output_dict_per_obj"][0]
            idx = list(range(first_index, last + 1))
            scores_t = torch.stack(
                [
                    (od["cond_frame_outputs"].get(g) or od["non_cond_frame_outputs"][g])["object_score_logits"]
                    .float()
                    .reshape(-1)[0]
                    for g in idx
                ]
            )
            # one device-to-host copy per call: logits and object scores of all frames together
            all_logits = torch.stack([logits[g].float() for g in idx]).cpu().numpy()
            scores = [float(s) for s in scores_t.cpu().tolist()]

        lg = list(all_logits)
        return TrackResult(
            frame_indices=idx,
            masks=[x > 0 for x in lg],
            logits=lg,
            object_scores=scores,
            resume=resume_out,
            snapshots=snaps,
        )
