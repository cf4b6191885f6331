"""Ingestion benchmark: scenes per second, and bytes read per scene next to the physical floor.

The floor is the bytes of the COG blocks that intersect the AOI (B04, B08, SCL for an accepted scene; SCL only
for a rejected one): no reader can do with less. Prints ratios measured in one run; not a timed test.

    python bench/ingest_bench.py [--years 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.ingest.reader import RasterioReader
from scarmon.site import parse_site
from scarmon.store.backends import open_store
from scarmon.demo.synthetic import demo_site, generate_catalog


def aoi_block_bytes(href: str, aoi_bounds_lonlat: tuple[float, float, float, float]) -> int:
    """Bytes of the blocks of band 1 that intersect the AOI's bounding box."""
    with rasterio.open(href) as src:
        box = transform_bounds("EPSG:4326", src.crs, *aoi_bounds_lonlat, densify_pts=21)
        win = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
        total = 0
        for (row, col), block in src.block_windows(1):
            if _overlaps(block, win):
                total += src.block_size(1, row, col)
        return total


def _overlaps(a: Window, b: Window) -> bool:
    return (a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width
            and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scarmon-bench-"))
    site = parse_site(demo_site("creep-failure"))
    start = dt.date(2021, 6, 1)
    end = start + dt.timedelta(days=int(365 * args.years))
    t0 = time.perf_counter()
    items_path = generate_catalog(out / "catalog", site, scenario="creep-failure", start=start, end=end)
    t_gen = time.perf_counter() - t0
    items = json.loads(items_path.read_text())["features"]
    reader = RasterioReader()
    t0 = time.perf_counter()
    report = ingest(site, open_catalog(str(items_path)), open_store(str(out / "store")), reader=reader)
    t_ingest = time.perf_counter() - t0

    accepted = {sid.split("_")[1] for sid in report.appended}
    rejected = {sid.split("_")[1] for sid, _ in report.rejected}
    read, floor = defaultdict(int), defaultdict(int)
    band_bytes_rejected = 0
    bounds = site.polygon.bounds
    for item in items:
        day = item["id"].split("_")[2][:8]
        kind = "accepted" if day in accepted else "rejected" if day in rejected else None
        if kind is None:
            continue
        for key, asset in item["assets"].items():
            got = reader.stats.by_href.get(asset["href"], 0)
            read[kind] += got
            if kind == "rejected" and key in ("B04", "B08"):
                band_bytes_rejected += got
            if key == "SCL" or kind == "accepted":
                floor[kind] += aoi_block_bytes(asset["href"], bounds)
    n_acc, n_rej = len(report.appended), len(report.rejected)
    print(f"synthetic site {site.id}: {start} to {end}, {len(items)} items, {report.found} scenes "
          f"({n_acc} accepted, {n_rej} rejected); generated in {t_gen:.1f} s")
    print(f"ingest: {t_ingest:.1f} s, {report.found / t_ingest:.2f} scenes/s")
    for kind, n in (("accepted", n_acc), ("rejected", n_rej)):
        if n:
            print(f"{kind:9s}: {read[kind] / n / 1024:8.1f} KiB read/scene, floor {floor[kind] / n / 1024:8.1f} KiB/scene, "
                  f"ratio {read[kind] / max(floor[kind], 1):.2f}x")
    print(f"B04/B08 bytes read for rejected scenes: {band_bytes_rejected}")


if __name__ == "__main__":
    main()
