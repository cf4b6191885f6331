"""Resume cost and memory of tracking, for both trackers. Prints ratios measured in one run; not a timed test.

- one new frame after a 200-frame history vs after a 20-frame history (target ratio <= 1.2),
- SAM 2: one new frame vs a full re-propagation of 200 frames (target >= 20x cheaper),
- peak RSS tracking a 200-frame sequence vs a 20-frame one (target <= 1.3x),
- SAM 2 model time apart from I/O (`model_speed`, also used by bench/sam2_gpu.py): frames/s of SAM 2's own
  `propagate_in_video` over preprocessed frames held in memory, of the engine in one call (frames preprocessed
  on the device as they are reached), of the engine with a resume state after every frame (what `track_site`
  stores), and the bytes of one resume state,
- SAM 2 `track_site` frames per second end to end (decode, preprocess, model, mask and state writes).

SAM 2 runs with random weights saved to a checkpoint file (trained weights cannot be downloaded here): the cost
of a forward pass does not depend on the weights' values.

    python bench/track_resume.py [--image-size 256] [--device cpu] [--long 200] [--short 20] [--skip-sam2]
                                 [--model-frames 24] [--model-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from scarmon.demo.synthetic import demo_site, generate_catalog
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.store.sequence import append, load_manifest


def build_sequence(src_store, site_id: str, dst: Path, n: int) -> None:
    """A sequence of n frames made by cycling through real ingested frames under new dates and scene ids."""
    import datetime as dt

    manifest, _ = load_manifest(src_store, site_id)
    store = open_store(str(dst))
    base = dt.datetime(2021, 6, 1, 4, 17, tzinfo=dt.UTC)  # the demo site prompts are on 2021-06-01
    for i in range(n):
        src = manifest.frames[i % len(manifest.frames)]
        when = base + dt.timedelta(days=5 * i)
        sid = f"S2X_{when:%Y%m%d}_R033"
        keys = {
            role: f"{site_id}/frames/{when:%Y-%m-%d}_{sid}.{key.rsplit('.', 1)[1]}" for role, key in src.objects.items()
        }
        entry = replace(
            src, date=f"{when:%Y-%m-%d}", scene_id=sid, datetime=when.isoformat().replace("+00:00", "Z"), objects=keys
        )
        append(
            store,
            site_id,
            frames=[entry],
            rejections=[],
            grid=manifest.grid,
            data={keys[r]: src_store.get(k) for r, k in src.objects.items()},
        )


def model_speed(
    device: str, image_size: int, n_frames: int, *, hw: int = 256, warmup: int = 2, compile: bool = False
) -> dict:
    """Frames/s of SAM 2's own propagation vs the engine (one call; with a state after every frame), random weights."""
    import numpy as np
    import torch

    from scarmon.tracking.sam2_engine import EngineConfig, Sam2Engine, build_predictor, preprocess_frame

    torch.manual_seed(0)
    cfg = EngineConfig(image_size=image_size, device=device, compile=compile)
    predictor = build_predictor(cfg)
    engine = Sam2Engine(cfg, predictor)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:hw, :hw]
    frames = [
        np.clip(
            np.where((yy - hw / 2) ** 2 + (xx - hw / 2) ** 2 < (hw / 6 + t) ** 2, 60.0, 190.0)
            + rng.normal(0, 10, (hw, hw)),
            0,
            255,
        ).astype(np.uint8)
        for t in range(n_frames)
    ]
    prompts = {0: [(hw / 2, hw / 2, 1), (5.0, 5.0, 0)]}
    dev = torch.device(device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def sam2_own() -> float:
        from scarmon.tracking.sam2_engine import _autocast, sam2_inference_state

        images = torch.stack([preprocess_frame(f, image_size, dev) for f in frames])
        st = sam2_inference_state(images, n_frames, (hw, hw), dev)
        with torch.inference_mode(), _autocast(dev):
            predictor.add_new_points_or_box(
                st, 0, 1, points=[p[:2] for p in prompts[0]], labels=[p[2] for p in prompts[0]]
            )
            sync()
            t = time.perf_counter()
            for _ in predictor.propagate_in_video(st, start_frame_idx=1):
                pass
            sync()
        return (n_frames - 1) / (time.perf_counter() - t)

    def engine_call(snapshots: bool) -> tuple[float, int]:
        sync()
        t = time.perf_counter()
        r = engine.track_detailed(frames, prompts, snapshots=snapshots)
        sync()
        size = max((len(b) for b in r.snapshots.values()), default=len(r.resume))
        return n_frames / (time.perf_counter() - t), size

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):  # first calls pay allocation and kernel selection
        engine.track_detailed(frames[:2], prompts)
    own = sam2_own()
    fps_engine, _ = engine_call(False)
    fps_snap, state_bytes = engine_call(True)
    out = {
        "device": device,
        "image_size": image_size,
        "frames": n_frames,
        "compiled": compile,
        "sam2_propagate_fps": own,
        "engine_fps": fps_engine,
        "engine_with_states_fps": fps_snap,
        "state_bytes": state_bytes,
    }
    if dev.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def print_model_speed(r: dict) -> None:
    print(
        f"sam2 model time on {r['device']} at image size {r['image_size']} ({r['frames']} frames, random weights"
        f"{', compiled (vos_optimized)' if r['compiled'] else ''}):"
    )
    print(f"  SAM 2 propagate_in_video     {r['sam2_propagate_fps']:8.2f} frames/s")
    print(
        f"  engine, one call             {r['engine_fps']:8.2f} frames/s "
        f"({r['sam2_propagate_fps'] / r['engine_fps']:.2f}x SAM 2's time; target <= 1.3)"
    )
    print(
        f"  engine, state after each     {r['engine_with_states_fps']:8.2f} frames/s; "
        f"{r['state_bytes'] / 1024:.0f} KiB per resume state"
    )
    if "peak_gib" in r:
        print(f"  peak GPU memory {r['peak_gib']:.2f} GiB")


def worker(
    store_dir: str, site_json: str, tracker_name: str, image_size: int, checkpoint: str | None, device: str = "cpu"
) -> None:
    """In its own process: track the whole sequence, then one appended frame; print times and peak RSS."""
    from scarmon.store import keys as store_keys
    from scarmon.tracking.knowledge import KnowledgeParams
    from scarmon.tracking.pipeline import track_site
    from scarmon.tracking.trackers import KnowledgeTracker, Sam2Settings, Sam2Tracker

    site = parse_site(json.loads(site_json))
    if tracker_name == "sam2":
        tracker = Sam2Tracker(Sam2Settings(checkpoint=checkpoint, device=device, image_size=image_size))
    else:
        tracker = KnowledgeTracker(KnowledgeParams(threshold=site.ndvi_threshold))
    store = open_store(store_dir)
    manifest, _ = load_manifest(store, site.id)
    last = manifest.frames[-1]
    # Hide the last frame: track the history first, then let it arrive.
    history = open_store(store_dir + "-history")
    build_from(store, history, site.id, drop_last=True)
    t0 = time.perf_counter()
    full = track_site(site, history, tracker=tracker)
    t_full = time.perf_counter() - t0
    rss_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    append(
        history,
        site.id,
        frames=[last],
        rejections=[],
        grid=manifest.grid,
        data={k: store.get(k) for k in last.objects.values()},
    )
    t0 = time.perf_counter()
    one = track_site(site, history, tracker=tracker)
    t_one = time.perf_counter() - t0
    state = history.get(store_keys.tracker_state(site.id, tracker.name, last))
    print(
        json.dumps(
            {
                "history": len(full.tracked),
                "t_full": t_full,
                "t_one": t_one,
                "new": len(one.tracked),
                "maxrss_kib": rss_full,
                "state_bytes_last": len(state),
            }
        )
    )


def build_from(src, dst, site_id: str, *, drop_last: bool) -> None:
    manifest, _ = load_manifest(src, site_id)
    frames = manifest.frames[:-1] if drop_last else manifest.frames
    for f in frames:
        append(
            dst,
            site_id,
            frames=[f],
            rejections=[],
            grid=manifest.grid,
            data={k: src.get(k) for k in f.objects.values()},
        )


def run_worker(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--long", type=int, default=200)
    ap.add_argument("--short", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-frames", type=int, default=24, help="frames for the model-time comparison")
    ap.add_argument("--skip-sam2", action="store_true")
    ap.add_argument("--model-only", action="store_true", help="only the SAM 2 model-time comparison")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        store_dir, site_json, tracker, size, ckpt, device = args.worker
        worker(store_dir, site_json, tracker, int(size), ckpt if ckpt != "-" else None, device)
        return
    if not args.skip_sam2:
        print_model_speed(model_speed(args.device, args.image_size, args.model_frames))
    if args.model_only:
        return
    root = Path(tempfile.mkdtemp(prefix="scarmon-resume-"))
    raw = demo_site("creep-failure")
    site = parse_site(raw)
    items = generate_catalog(root / "cat", site, start="2021-12-01", end="2022-06-01")
    seed_store = open_store(str(root / "seed"))
    ingest(site, open_catalog(str(items)), seed_store)
    for n in (args.short, args.long):
        build_sequence(seed_store, site.id, root / f"seq{n}", n + 1)
    ckpt = "-"
    if not args.skip_sam2:
        import torch

        from scarmon.tracking.sam2_engine import EngineConfig, build_predictor

        torch.manual_seed(0)
        ckpt = str(root / "random.pt")
        torch.save({"model": build_predictor(EngineConfig(image_size=args.image_size)).state_dict()}, ckpt)
    site_json = json.dumps(raw, default=str)
    trackers = ["knowledge"] + ([] if args.skip_sam2 else ["sam2"])
    print(f"{'tracker':10s} {'history':>7s} {'full s':>8s} {'1 new s':>8s} {'peak RSS MiB':>12s}")
    results = {}
    for name in trackers:
        for n in (args.short, args.long):
            work = root / f"work-{name}-{n}"
            shutil.copytree(root / f"seq{n}", work)
            r = run_worker([str(work), site_json, name, str(args.image_size), ckpt, args.device])
            results[(name, n)] = r
            print(
                f"{name:10s} {r['history']:7d} {r['t_full']:8.2f} {r['t_one']:8.3f} {r['maxrss_kib'] / 1024:12.0f}"
                f"   state {r['state_bytes_last'] / 1024:.0f} KiB"
            )
    for name in trackers:
        s, l = results[(name, args.short)], results[(name, args.long)]  # noqa: E741 - short / long
        print(
            f"{name}: one new frame after {args.long} vs after {args.short}: {l['t_one'] / s['t_one']:.2f}x "
            "(target <= 1.2); "
            f"peak RSS {args.long} vs {args.short} frames: {l['maxrss_kib'] / s['maxrss_kib']:.2f}x (target <= 1.3)"
        )
        print(
            f"{name}: full re-propagation of {args.long} frames / one new frame: {l['t_full'] / l['t_one']:.1f}x"
            + (" (target >= 20)" if name == "sam2" else "")
        )
        if name == "sam2":
            print(
                f"sam2: track_site {l['history'] / l['t_full']:.2f} frames/s on {args.device} at image size "
                f"{args.image_size} (end to end: decode, preprocess, model, mask and state writes)"
            )


if __name__ == "__main__":
    main()
