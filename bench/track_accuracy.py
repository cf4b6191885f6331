"""Tracking accuracy on the synthetic scenarios: mean IoU / precision / recall of the knowledge tracker against the
generator's truth, next to two baselines: per-frame NDVI thresholding, and thresholding restricted to the
components connected to the positive prompts. Printed, not asserted.

    python bench/track_accuracy.py [--years 2] [--scenarios creep-failure,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from scarmon.store import keys
from scarmon.ingest.discovery import open_catalog
from scarmon.tracking.evaluate import scores
from scarmon.ingest.frames import decode_ndvi
from scarmon.grid import SiteGrid
from scarmon.ingest.pipeline import ingest
from scarmon.store.sequence import load_manifest
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.demo.synthetic import SCENARIOS, demo_site, generate_catalog, truth_mask
from scarmon.tracking.pipeline import prompts_by_frame, read_mask, track_site


def prompt_components(low: np.ndarray, positives: list[tuple[float, float, int]]) -> np.ndarray:
    labels, _ = ndimage.label(low, structure=np.ones((3, 3)))
    ids = {labels[int(r), int(c)] for c, r, _ in positives} - {0}
    return np.isin(labels, list(ids))


def run(scenario: str, out: Path, years: float) -> dict[str, tuple[float, float, float]]:
    site = parse_site(demo_site(scenario))
    start = dt.date(2021, 6, 1)
    items = generate_catalog(out / scenario / "catalog", site, scenario=scenario, start=start,
                             end=start + dt.timedelta(days=int(365 * years)))
    store = open_store(str(out / scenario / "store"))
    ingest(site, open_catalog(str(items)), store)
    track_site(site, store)
    manifest, _ = load_manifest(store, site.id)
    grid = SiteGrid.from_dict(manifest.grid)
    aoi = grid.mask(site.polygon)
    positives = [p for ps in prompts_by_frame(site.prompts, manifest.frames, grid).values() for p in ps if p[2] == 1]
    results: dict[str, list[tuple[float, float, float]]] = {"knowledge tracker": [], "NDVI threshold": [],
                                                            "prompt-connected threshold": []}
    for frame in manifest.frames:
        truth = truth_mask(site, grid, dt.date.fromisoformat(frame.date), scenario=scenario) & aoi
        ndvi = decode_ndvi(store.get(frame.objects["ndvi"]))
        low = (ndvi <= site.ndvi_threshold) & aoi
        results["knowledge tracker"].append(scores(read_mask(store, keys.mask(site.id, frame)) & aoi, truth))
        results["NDVI threshold"].append(scores(low, truth))
        results["prompt-connected threshold"].append(scores(prompt_components(low, positives), truth))
    return {k: tuple(float(np.mean([s[i] for s in v])) for i in range(3)) for k, v in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", type=float, default=2.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scarmon-acc-"))
    print(f"{'scenario':18s} {'method':28s} {'IoU':>6s} {'prec':>6s} {'recall':>6s}")
    for scenario in args.scenarios.split(","):
        t0 = time.perf_counter()
        res = run(scenario, out, args.years)
        for method, (iou, p, r) in res.items():
            print(f"{scenario:18s} {method:28s} {iou:6.3f} {p:6.3f} {r:6.3f}")
        best = max(res, key=lambda k: res[k][0])
        print(f"{scenario:18s} -> best: {best}; knowledge/threshold IoU ratio "
              f"{res['knowledge tracker'][0] / max(res['NDVI threshold'][0], 1e-9):.2f} [{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
