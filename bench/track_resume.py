"""Resume cost and memory of tracking, for both trackers. Prints ratios measured in one run; not a timed test.

- one new frame after a 200-frame history vs after a 20-frame history (target ratio <= 1.2),
- SAM 2: one new frame vs a full re-propagation of 200 frames (target >= 20x cheaper),
- peak RSS tracking a 200-frame sequence vs a 20-frame one (target <= 1.3x),
- SAM 2 frames per second on this CPU at the image size used.

SAM 2 runs with random weights saved to a checkpoint file (trained weights cannot be downloaded here): the cost
of a forward pass does not depend on the weights' values.

    python bench/track_resume.py [--image-size 256] [--long 200] [--short 20] [--skip-sam2]
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

from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.store.sequence import append, load_manifest
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.demo.synthetic import demo_site, generate_catalog


def build_sequence(src_store, site_id: str, dst: Path, n: int) -> None:
    """A sequence of n frames made by cycling through real ingested frames under new dates and scene ids."""
    import datetime as dt

    manifest, _ = load_manifest(src_store, site_id)
    store = open_store(str(dst))
    base = dt.datetime(2021, 6, 1, 4, 17, tzinfo=dt.timezone.utc)  # the demo site prompts are on 2021-06-01
    for i in range(n):
        src = manifest.frames[i % len(manifest.frames)]
        when = base + dt.timedelta(days=5 * i)
        sid = f"S2X_{when:%Y%m%d}_R033"
        keys = {role: f"{site_id}/frames/{when:%Y-%m-%d}_{sid}.{key.rsplit('.', 1)[1]}" for role, key in src.objects.items()}
        entry = replace(src, date=f"{when:%Y-%m-%d}", scene_id=sid, datetime=when.isoformat().replace("+00:00", "Z"),
                        objects=keys)
        append(store, site_id, frames=[entry], rejections=[], grid=manifest.grid,
               data={keys[r]: src_store.get(k) for r, k in src.objects.items()})


def worker(store_dir: str, site_json: str, tracker_name: str, image_size: int, checkpoint: str | None) -> None:
    """In its own process: track the whole sequence, then one appended frame; print times and peak RSS."""
    from scarmon.tracking.pipeline import track_site
    from scarmon.tracking.knowledge import KnowledgeParams
    from scarmon.tracking.trackers import KnowledgeTracker, Sam2Settings, Sam2Tracker

    site = parse_site(json.loads(site_json))
    if tracker_name == "sam2":
        tracker = Sam2Tracker(Sam2Settings(checkpoint=checkpoint, device="cpu", image_size=image_size))
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
    append(history, site.id, frames=[last], rejections=[], grid=manifest.grid,
           data={k: store.get(k) for k in last.objects.values()})
    t0 = time.perf_counter()
    one = track_site(site, history, tracker=tracker)
    t_one = time.perf_counter() - t0
    print(json.dumps({"history": len(full.tracked), "t_full": t_full, "t_one": t_one, "new": len(one.tracked),
                      "maxrss_kib": rss_full}))


def build_from(src, dst, site_id: str, *, drop_last: bool) -> None:
    manifest, _ = load_manifest(src, site_id)
    frames = manifest.frames[:-1] if drop_last else manifest.frames
    for f in frames:
        append(dst, site_id, frames=[f], rejections=[], grid=manifest.grid, data={k: src.get(k) for k in f.objects.values()})


def run_worker(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--long", type=int, default=200)
    ap.add_argument("--short", type=int, default=20)
    ap.add_argument("--skip-sam2", action="store_true")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        store_dir, site_json, tracker, size, ckpt = args.worker
        worker(store_dir, site_json, tracker, int(size), ckpt if ckpt != "-" else None)
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
            r = run_worker([str(work), site_json, name, str(args.image_size), ckpt])
            results[(name, n)] = r
            print(f"{name:10s} {r['history']:7d} {r['t_full']:8.2f} {r['t_one']:8.3f} {r['maxrss_kib'] / 1024:12.0f}")
    for name in trackers:
        s, l = results[(name, args.short)], results[(name, args.long)]
        print(f"{name}: one new frame after {args.long} vs after {args.short}: {l['t_one'] / s['t_one']:.2f}x (target <= 1.2); "
              f"peak RSS {args.long} vs {args.short} frames: {l['maxrss_kib'] / s['maxrss_kib']:.2f}x (target <= 1.3)")
        print(f"{name}: full re-propagation of {args.long} frames / one new frame: {l['t_full'] / l['t_one']:.1f}x"
              + (" (target >= 20)" if name == "sam2" else ""))
        if name == "sam2":
            print(f"sam2: {l['history'] / l['t_full']:.2f} frames/s on this CPU at image size {args.image_size} "
                  "(end to end: decode, preprocess, model, mask and state writes)")


if __name__ == "__main__":
    main()
