"""The two trackers behind one interface: SAM 2 when a checkpoint is configured, the knowledge tracker otherwise.

A tracker takes a window of frames with their global indices, the prompts that fall in it and the state after the
frame before it, and returns masks plus the state after each frame. State is opaque bytes stored with the
sequence, so tracking resumes at a cost that does not depend on the history length.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scarmon.tracking.knowledge import (
    KnowledgeParams,
    KnowledgeState,
    decode_state,
    encode_state,
    knowledge_step,
    observe_frame,
    prompt_misses,
    track_backward,
)

log = logging.getLogger(__name__)

Point = tuple[float, float, int]


@dataclass(frozen=True)
class FrameData:
    index: int  # global index in the site's sequence
    ndvi: np.ndarray  # float32, NaN where not clear
    video: np.ndarray  # uint8 gray frame (fixed NDVI mapping)


class Tracker(Protocol):
    name: str
    window: int  # frames per call: bounds memory whatever the history length

    def identity(self) -> dict[str, object]:
        """What produced the stored states: a different identity means states cannot be resumed from."""
        ...

    def run(
        self,
        frames: Sequence[FrameData],
        prompts: Mapping[int, list[Point]],
        corrections: Mapping[int, list[Point]],
        *,
        resume: bytes | None,
    ) -> tuple[list[np.ndarray], list[bytes]]:
        """Masks and the state after each frame. `corrections` are clicks added on already tracked frames."""
        ...


class KnowledgeTracker:
    """Starts on the frame of its first prompt and tracks forward from there; frames before it (a history that
    begins before the scar existed) are tracked backward from that frame, so the scar may shrink to nothing. After
    `run`, `notes` holds why a frame's new area was held (by global index), `warnings` what the user must know
    (a prompt that found no low-NDVI ground) and `revisions` the seasonal holds confirmed on a frame (by its global
    index): per pixel, how many frames before it the pixel was scar too (0: none), for `track_site` to correct."""

    name = "knowledge"
    window = 1

    def __init__(self, params: KnowledgeParams):
        self.params = params
        self.notes: dict[int, str] = {}
        self.warnings: list[str] = []
        self.revisions: dict[int, np.ndarray] = {}

    def identity(self) -> dict[str, object]:
        return {"name": self.name, "params": {k: float(v) for k, v in vars(self.params).items()}}

    def run(
        self,
        frames: Sequence[FrameData],
        prompts: Mapping[int, list[Point]],
        corrections: Mapping[int, list[Point]],
        *,
        resume: bytes | None,
    ) -> tuple[list[np.ndarray], list[bytes]]:
        self.notes, self.warnings, self.revisions = {}, [], {}
        state = decode_state(resume) if resume else KnowledgeState()
        clicks = {f.index: list(prompts.get(f.index, [])) + list(corrections.get(f.index, [])) for f in frames}
        first = 0
        if resume is None:  # a fresh start begins on the first frame with a positive prompt (or box)
            first = next((k for k, f in enumerate(frames) if any(p[2] in (1, 2, 3) for p in clicks[f.index])), 0)
        masks: list[np.ndarray] = []
        states: list[bytes] = []
        if first:
            for f in frames[:first]:  # phenology and cloud history in time order, before any scar is known
                state = observe_frame(state, f.ndvi, self.params)
        for k, f in enumerate(frames[first:], start=first):
            mask, state = knowledge_step(state, ndvi=f.ndvi, prompts=clicks[f.index], params=self.params)
            if k == first and resume is None:
                self._check_prompts(f, clicks[f.index], mask)
            masks.append(mask)
            states.append(encode_state(state))
            if state.note:
                self.notes[f.index] = state.note
            if state.revision is not None:
                self.revisions[f.index] = state.revision
        if first:
            back = track_backward(
                [f.ndvi for f in frames[:first]], [clicks[f.index] for f in frames[:first]], masks[0], self.params
            )
            masks = back + masks
            states = [b""] * first + states  # no resume point before the prompt: re-tracking there starts afresh
        return masks, states

    def _check_prompts(self, frame: FrameData, clicks: list[Point], mask: np.ndarray) -> None:
        for c, r in prompt_misses(frame.ndvi, clicks, mask, self.params):
            msg = (
                f"positive prompt at pixel ({c}, {r}) on frame #{frame.index} lies on no low-NDVI ground "
                f"(NDVI {frame.ndvi[r, c]:.2f}): the scar is not visible there on that date; check the prompt's "
                f"date and place"
            )
            log.warning(msg)
            self.warnings.append(msg)


@dataclass(frozen=True)
class Sam2Settings:
    """From the environment, so a service configures SAM 2 without touching site files."""

    checkpoint: str | None
    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    device: str = "cpu"
    image_size: int = 1024
    window: int | None = None  # frames per call; None: defaults.SAM2_WINDOW_CPU / _GPU by device
    compile: bool = False  # SCARMON_SAM2_COMPILE=1: SAM 2's vos_optimized (compiled) predictor, warmed up once

    @classmethod
    def from_env(cls, checkpoint: str | None = None) -> Sam2Settings:
        env = os.environ
        device = env.get("SCARMON_SAM2_DEVICE") or _default_device()
        size = int(env.get("SCARMON_SAM2_IMAGE_SIZE") or (1024 if device.startswith("cuda") else 512))
        window = int(env["SCARMON_SAM2_WINDOW"]) if env.get("SCARMON_SAM2_WINDOW") else None
        return cls(
            checkpoint or env.get("SCARMON_SAM2_CHECKPOINT") or None,
            env.get("SCARMON_SAM2_CONFIG") or cls.config,
            device,
            size,
            window,
            env.get("SCARMON_SAM2_COMPILE", "") == "1",
        )


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class Sam2Tracker:
    """SAM 2 video tracking (the paper's method) with causal prompts and corrections on any frame.

    Site prompts and corrections are applied in time order while tracking (see ``sam2_engine``), so a run that
    resumes from any stored state gives exactly what one run over the whole series gives. The model is built once
    per process and configuration and shared by every site and tick (``sam2_engine.shared_predictor``)."""

    name = "sam2"

    def __init__(self, settings: Sam2Settings, predictor: object | None = None):
        from scarmon import defaults
        from scarmon.tracking.sam2_engine import EngineConfig, Sam2Engine, shared_predictor

        self.settings = settings
        cfg = EngineConfig(
            config=settings.config,
            checkpoint=settings.checkpoint,
            device=settings.device,
            image_size=settings.image_size,
            compile=settings.compile,
        )
        self.engine = Sam2Engine(cfg, predictor if predictor is not None else shared_predictor(cfg))
        gpu = settings.device.startswith("cuda")
        self.window = settings.window or (defaults.SAM2_WINDOW_GPU if gpu else defaults.SAM2_WINDOW_CPU)
        # Frames before this one get a resume state only every STATE_EVERY frames (and the last of each window,
        # to resume the next): the others would be pruned after the run (track_site sets it per run).
        self.keep_states_from = 0

    def identity(self) -> dict[str, object]:
        s = self.settings
        from scarmon.tracking.sam2_engine import RESUME_VERSION

        # the state format is part of it: states of an older format are re-tracked, not misread
        return {
            "name": self.name,
            "config": s.config,
            "image_size": s.image_size,
            "state_version": RESUME_VERSION,
            "checkpoint_sha256": _sha256(s.checkpoint) if s.checkpoint else None,
            **({"compiled": True} if s.compile else {}),
        }

    def first_changed(
        self, resume: bytes, prompts: Mapping[int, list[Point]], corrections: Mapping[int, list[Point]]
    ) -> int | None:
        """First frame whose prompts or corrections differ from those `resume` was made with (None: it is valid)."""
        return self.engine.first_changed(resume, prompts, corrections)

    def run(
        self,
        frames: Sequence[FrameData],
        prompts: Mapping[int, list[Point]],
        corrections: Mapping[int, list[Point]],
        *,
        resume: bytes | None,
    ) -> tuple[list[np.ndarray], list[bytes]]:
        from scarmon import defaults

        first = frames[0].index
        keep = {
            f.index for f in frames if f.index >= self.keep_states_from or (f.index + 1) % defaults.STATE_EVERY == 0
        }
        # SAM 2 sees invalid (cloud, no-data) pixels filled from their last clear value, not as black
        result = self.engine.track_detailed(
            [f.video for f in frames],
            prompts,
            corrections=corrections,
            resume=resume,
            first_index=first,
            snapshots=keep | {frames[-1].index},
            valid=[np.isfinite(f.ndvi) for f in frames],
        )
        by_index = dict(zip(result.frame_indices, result.masks, strict=True))
        # Frames tracked backward (and frames whose state would be pruned) have no snapshot: store none, so a
        # later resume goes back to a real one.
        return [by_index[f.index] for f in frames], [result.snapshots.get(f.index, b"") for f in frames]


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: str) -> str:
    """SHA-256 of a checkpoint, cached by path, size and mtime (hashing 150 MB-1 GB on every run is not free)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def make_tracker(threshold: float, *, checkpoint: str | None = None) -> Tracker:
    """SAM 2 when a checkpoint is configured (argument or $SCARMON_SAM2_CHECKPOINT), else the knowledge tracker."""
    settings = Sam2Settings.from_env(checkpoint)
    if settings.checkpoint:
        return Sam2Tracker(settings)
    return KnowledgeTracker(KnowledgeParams(threshold=threshold))
