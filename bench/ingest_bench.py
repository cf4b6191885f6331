"""Ingestion benchmark: scarmon against an odc-stac script doing the same job, over HTTP, in one run.

Two layouts of the same synthetic site (`--layouts`): "straddling", the generator's default, where each of the two
tiles of a pass cuts through the AOI (both are needed), and "covering", where on `--cover-share` of the passes
(issue 12: ~30 % of dates) one tile's footprint covers the whole AOI and the other only part of it (redundant).
A synthetic site's COGs are served by an HTTP server on 127.0.0.1 (Range and multi-range requests, keep-alive)
that counts requests and bytes and adds a fixed delay per request (0 and 20 ms by default: loopback, and a near
cloud region). Each contender runs in its own Python process (GDAL's /vsicurl/ caches would otherwise favour the
second), against the same static catalog:

- scarmon: `scarmon.ingest.pipeline.ingest` into a fresh local store (NDVI COG + video PNG per kept date).
- odc-stac: a competent script doing the same job. Pass 1: SCL at 20 m on the site grid, `groupby="solar_day"`,
  screened with the same rules; pass 2: B04/B08 bilinear at the site resolution for the kept dates only,
  radiometry per date, NDVI masked by clear SCL, written as a deflate GeoTIFF. Run twice: `odc-pool` with a
  thread pool as large as scarmon's read concurrency (`pool=`: the comparison is then of work done, not of
  parallelism), and `odc-seq` with odc-stac's defaults (one read at a time), the script most people write.

Printed side by side: wall time and CPU time (user + system) of the job (after each process's imports), HTTP
requests and COG bytes, against
  - the floor: SCL blocks over the AOI for rejected dates; on kept dates the SCL blocks and, where one item's
    footprint covers the AOI, that item's B04/B08 blocks only (else every item's);
  - the all-items reference of the issue: AOI blocks of B04/B08/SCL of every item on kept dates + SCL of rejected.
Then the NDVI of both contenders on the kept dates (max abs difference), the B04/B08 bytes read for rejected dates
(must be 0), and the redundant band bytes: B04/B08 of the other items on kept dates where one item covers the AOI.
Not a timed test. odc-stac is not a scarmon dependency: `pip install odc-stac` (or put it on PYTHONPATH) to run.

    python bench/ingest_bench.py [--years 1] [--latency-ms 0 20] [--out DIR] [--contenders scarmon odc-pool ...]
                                 [--layouts straddling covering] [--cover-share 0.3] [--log-items]

To measure an older scarmon ("before"), run this script from an export of that tree (`git archive`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry import shape

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scarmon import defaults  # noqa: E402
from scarmon.demo.synthetic import demo_site, generate_catalog  # noqa: E402
from scarmon.site import parse_site  # noqa: E402

SCENARIO = "creep-failure"
LAYOUTS = ("straddling", "covering")
"""straddling: covering_share 0 (the generator's default); covering: covering_share --cover-share."""


# --- The HTTP server ------------------------------------------------------------------------------------------------


class CogServer(http.server.ThreadingHTTPServer):
    """Serves files under `root` with Range support; counts requests and body bytes per path; optional delay."""

    daemon_threads = True

    def __init__(self, root: Path, delay_s: float = 0.0) -> None:
        self.root, self.delay_s = root.resolve(), delay_s
        self.lock = threading.Lock()
        self.reset()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """GDAL drops kept-alive connections when it closes a file: not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.requests = 0
            self.bytes_by_path: dict[str, int] = defaultdict(int)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        srv: CogServer = self.server  # type: ignore[assignment]  # socketserver types `server` as BaseServer
        if srv.delay_s:
            time.sleep(srv.delay_s)
        path = (srv.root / self.path.split("?", 1)[0].lstrip("/")).resolve()
        if srv.root not in path.parents or not path.is_file():
            self._send(404, b"", {}, body)
            return
        data = path.read_bytes()
        size = len(data)
        ranges = _ranges(self.headers.get("Range"), size)
        if ranges is None:
            payload, status, headers = data, 200, {"Content-Type": "image/tiff"}
        elif len(ranges) == 1:
            a, b = ranges[0]
            payload, status = data[a : b + 1], 206
            headers = {"Content-Type": "image/tiff", "Content-Range": f"bytes {a}-{b}/{size}"}
        else:
            boundary = "scarmonbench"
            parts = [
                f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n".encode()
                + data[a : b + 1]
                + b"\r\n"
                for a, b in ranges
            ]
            payload, status = b"".join(parts) + f"--{boundary}--\r\n".encode(), 206
            headers = {"Content-Type": f"multipart/byteranges; boundary={boundary}"}
        with srv.lock:
            srv.requests += 1
            if body:
                srv.bytes_by_path[str(path)] += sum(b - a + 1 for a, b in ranges) if ranges else size
        self._send(status, payload, {**headers, "Accept-Ranges": "bytes"}, body)

    def _send(self, status: int, payload: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)


def _ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    if not header or not header.startswith("bytes="):
        return None
    out = []
    for spec in header[6:].split(","):
        m = re.fullmatch(r"\s*(\d*)-(\d*)\s*", spec)
        if not m:
            return None
        a, b = m.groups()
        if a == "":
            start, end = size - int(b), size - 1
        else:
            start, end = int(a), min(int(b) if b else size - 1, size - 1)
        out.append((start, end))
    return out


# --- Floors ---------------------------------------------------------------------------------------------------------


def aoi_block_bytes(path: str, aoi_bounds_lonlat: tuple[float, float, float, float]) -> int:
    """Bytes of the blocks of band 1 that intersect the AOI's bounding box."""
    with rasterio.open(path) as src:
        box = transform_bounds("EPSG:4326", src.crs, *aoi_bounds_lonlat, densify_pts=21)
        win = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
        return sum(src.block_size(1, r, c) for (r, c), block in src.block_windows(1) if _overlaps(block, win))


def _overlaps(a: Window, b: Window) -> bool:
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


def _day(item: dict[str, Any]) -> str:
    return str(item["properties"]["datetime"])[:10]


# --- Contenders (each in its own process) ---------------------------------------------------------------------------


def run_scarmon(catalog: Path, out: Path, concurrency: int) -> dict[str, Any]:
    from scarmon.ingest.discovery import open_catalog
    from scarmon.ingest.frames import decode_ndvi
    from scarmon.ingest.pipeline import ingest
    from scarmon.store.backends import open_store
    from scarmon.store.sequence import load_manifest

    site = parse_site(demo_site(SCENARIO))
    store = open_store(str(out / "store"))
    params = inspect.signature(ingest).parameters  # so this script also measures older scarmon trees ("before")
    kwargs = {k: v for k, v in (("concurrency", concurrency), ("deep", False)) if k in params}
    ingest(site, open_catalog(str(catalog)), store, **kwargs)
    manifest, _ = load_manifest(store, site.id)
    for f in manifest.frames:
        np.save(out / f"ndvi_{f.date}.npy", decode_ndvi(store.get(f.objects["ndvi"])))
    return {"kept": sorted(f.date for f in manifest.frames), "rejected": sorted({r.date for r in manifest.rejections})}


def run_odc(catalog: Path, out: Path, concurrency: int | None) -> dict[str, Any]:
    import odc.stac
    import pystac
    from odc.geo.geobox import GeoBox

    from scarmon.grid import site_grid
    from scarmon.ingest.radiometry import ndvi, reflectance_scaling
    from scarmon.ingest.screening import clear_pixels, screen

    site = parse_site(demo_site(SCENARIO))
    grid = site_grid(site.polygon, site.resolution_m)
    sgrid = grid.at_resolution(defaults.SCREEN_RESOLUTION_M)
    docs = json.loads(catalog.read_text())["features"]
    items = [pystac.Item.from_dict({**d, "links": []}) for d in docs]
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in docs:
        by_day[_day(d)].append(d)
    cfg = {"*": {"assets": {"*": {"nodata": 0}}}}
    aoi = sgrid.mask(site.polygon)
    scl = odc.stac.load(
        items,
        bands=["SCL"],
        groupby="solar_day",
        resampling="nearest",
        pool=concurrency,
        geobox=GeoBox(sgrid.shape, sgrid.transform, sgrid.crs),
        stac_cfg=cfg,
    )
    kept: list[tuple[str, np.ndarray]] = []
    rejected = []
    for t in range(scl.sizes["time"]):
        day = str(np.datetime_as_string(scl.time.values[t], unit="D"))
        arr = scl.SCL.values[t]
        result = screen(arr, aoi, min_coverage=site.min_coverage, max_cloud_fraction=site.max_cloud_fraction)
        (kept.append((day, arr)) if result.accepted else rejected.append(day))
    keep_items = [it for it, d in zip(items, docs, strict=True) if _day(d) in {k for k, _ in kept}]
    bands = odc.stac.load(
        keep_items,
        bands=["B04", "B08"],
        groupby="solar_day",
        resampling="bilinear",
        pool=concurrency,
        geobox=GeoBox(grid.shape, grid.transform, grid.crs),
        stac_cfg=cfg,
        dtype="float32",
    )
    k = round(sgrid.resolution / grid.resolution)
    for t, (day, arr) in enumerate(kept):
        first = by_day[day][0]
        scale, offset = reflectance_scaling(first, "B04")
        red, nir = (bands[b].values[t] for b in ("B04", "B08"))
        red = np.where(red > 0, red * scale + offset, np.nan)
        nir = np.where(nir > 0, nir * scale + offset, np.nan)
        out_ndvi = ndvi(red, nir)
        clear = np.repeat(np.repeat(clear_pixels(arr), k, 0), k, 1)[: grid.height, : grid.width]
        out_ndvi[~clear] = np.nan
        with rasterio.open(
            out / f"ndvi_{day}.tif",
            "w",
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=1,
            dtype="float32",
            crs=grid.crs,
            transform=grid.transform,
            nodata=np.nan,
            compress="deflate",
            tiled=True,
        ) as dst:
            dst.write(out_ndvi, 1)
        np.save(out / f"ndvi_{day}.npy", out_ndvi)
    return {"kept": sorted(d for d, _ in kept), "rejected": sorted(rejected)}


def worker(kind: str, catalog: Path, out: Path, concurrency: int) -> None:
    """One contender in this process; the clocks start after its imports (interpreter start-up is not the job)."""
    out.mkdir(parents=True, exist_ok=True)
    if kind == "scarmon":
        import scarmon.ingest.pipeline  # noqa: F401
    else:
        import odc.stac

        from scarmon.ingest.reader import GDAL_ENV

        odc.stac.configure_rio(cloud_defaults=True, **GDAL_ENV)  # the same GDAL I/O settings as scarmon's reader
    import scarmon.ingest.radiometry  # noqa: F401
    import scarmon.ingest.screening  # noqa: F401

    t0, c0 = time.perf_counter(), os.times()
    if kind == "scarmon":
        result = run_scarmon(catalog, out, concurrency)
    else:
        result = run_odc(catalog, out, concurrency if kind == "odc-pool" else None)
    c1 = os.times()
    result.update(wall=time.perf_counter() - t0, cpu=(c1.user - c0.user) + (c1.system - c0.system))
    (out / "result.json").write_text(json.dumps(result))


# --- The comparison -------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", type=float, default=1.0)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    ap.add_argument("--concurrency", type=int, default=getattr(defaults, "READ_CONCURRENCY", 8))  # older trees
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--contenders",
        nargs="+",
        default=["scarmon", "odc-pool", "odc-seq"],
        choices=["scarmon", "odc-pool", "odc-seq"],
    )
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    ap.add_argument("--cover-share", type=float, default=0.3, help="share of passes with a covering tile (covering)")
    ap.add_argument("--log-items", action="store_true", help="print scarmon's band bytes per item on covering dates")
    ap.add_argument("--worker", choices=["scarmon", "odc-pool", "odc-seq"], help=argparse.SUPPRESS)
    ap.add_argument("--catalog", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.catalog, args.out, args.concurrency)
        return
    out = (args.out or Path(tempfile.mkdtemp(prefix="scarmon-bench-"))).resolve()
    site = parse_site(demo_site(SCENARIO))
    start = dt.date(2021, 6, 1)
    end = start + dt.timedelta(days=int(365 * args.years))
    for layout in args.layouts:
        share = args.cover_share if layout == "covering" else 0.0
        root = out / f"{layout}-{share:g}"
        items = _catalog(root / "catalog", site, start, end, share)
        rows = _run_layout(root, items, args)
        print(f"\n== layout {layout} (covering_share {share:g}) ==")
        _report(site, items, rows, start, end, log_items=args.log_items)


def _catalog(cat: Path, site: Any, start: dt.date, end: dt.date, share: float) -> list[dict[str, Any]]:
    """The layout's static catalog, generated once per output folder (its name carries the share)."""
    items_path = cat / "items.json"
    if not items_path.exists():
        generate_catalog(cat, site, scenario=SCENARIO, start=start, end=end, covering_share=share)
    features: list[dict[str, Any]] = json.loads(items_path.read_text())["features"]
    return features


def _run_layout(root: Path, items: list[dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    """Serve the layout's catalog over HTTP and run every contender at every latency, each in its own process."""
    srv = CogServer(root / "catalog")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    http_items = json.loads(json.dumps(items))
    for it in http_items:
        for a in it["assets"].values():
            a["href"] = srv.url + "/" + str(Path(a["href"]).resolve().relative_to(srv.root))
    http_catalog = root / "http_items.json"
    http_catalog.write_text(json.dumps({"type": "FeatureCollection", "features": http_items}))
    rows = []
    for latency in args.latency_ms:
        for kind in args.contenders:
            srv.delay_s = latency / 1000
            srv.reset()
            run_dir = root / f"{kind}_{latency:g}ms"
            shutil.rmtree(run_dir, ignore_errors=True)  # a store left by an earlier run would make it a no-op
            cmd = [sys.executable, __file__, "--worker", kind, "--catalog", str(http_catalog), "--out", str(run_dir)]
            proc = subprocess.run([*cmd, "--concurrency", str(args.concurrency)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{kind} at {latency:g} ms failed:\n{proc.stderr[-3000:]}")
                continue
            res = json.loads((run_dir / "result.json").read_text())
            rows.append((kind, latency, res, srv.requests, dict(srv.bytes_by_path), run_dir))
    srv.shutdown()
    return rows


@dataclass(frozen=True)
class _Refs:
    """The byte references of one catalog and who reads what: floor, all-items reference, asset paths by role."""

    floor: int
    all_items: int
    rejected_bands: frozenset[str]
    """B04/B08 paths of the items of rejected dates."""
    redundant_bands: frozenset[str]
    """B04/B08 paths of the items that do not cover the AOI, on kept dates where another item does."""
    covering_days: tuple[str, ...]
    """Kept dates where one item covers the AOI."""


def _path(item: dict[str, Any], key: str) -> str:
    return str(Path(item["assets"][key]["href"]).resolve())


def _references(site: Any, items: list[dict[str, Any]], kept: set[str]) -> _Refs:
    bounds = site.polygon.bounds
    floor = all_items = 0
    rejected: set[str] = set()
    redundant: set[str] = set()
    covering_days = []
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        by_day[_day(it)].append(it)
    for day, its in sorted(by_day.items()):
        scl = sum(aoi_block_bytes(i["assets"]["SCL"]["href"], bounds) for i in its)
        floor += scl
        all_items += scl
        if day not in kept:
            rejected |= {_path(i, b) for i in its for b in ("B04", "B08")}
            continue
        band = {i["id"]: sum(aoi_block_bytes(i["assets"][b]["href"], bounds) for b in ("B04", "B08")) for i in its}
        all_items += sum(band.values())
        covering = [i for i in its if shape(i["geometry"]).contains(site.polygon)]
        floor += min(band[i["id"]] for i in covering) if covering else sum(band.values())
        if covering:
            covering_days.append(day)
            redundant |= {_path(i, b) for i in its if i not in covering for b in ("B04", "B08")}
    return _Refs(floor, all_items, frozenset(rejected), frozenset(redundant), tuple(covering_days))


def _log_items(items: list[dict[str, Any]], refs: _Refs, by_path: dict[str, int], site: Any) -> None:
    """Per item on the kept dates with a covering item: which tile, whether it covers, SCL and band bytes read."""
    for day in refs.covering_days:
        parts = []
        for it in (i for i in items if _day(i) == day):
            cov = "covers" if shape(it["geometry"]).contains(site.polygon) else "partial"
            scl, band = by_path.get(_path(it, "SCL"), 0), sum(by_path.get(_path(it, b), 0) for b in ("B04", "B08"))
            parts.append(f"{it['properties']['s2:mgrs_tile']} {cov:7s} SCL {scl:7d} B04+B08 {band:8d}")
        print(f"  {day}: " + " | ".join(parts))


def _report(
    site: Any, items: list[dict[str, Any]], rows: list[Any], start: dt.date, end: dt.date, *, log_items: bool = False
) -> None:
    if not rows:
        return
    kept = set(rows[0][2]["kept"])
    days = {_day(i) for i in items}
    refs = _references(site, items, kept)
    floor, all_items = refs.floor, refs.all_items
    print(
        f"synthetic site {site.id}: {start} to {end}, {len(items)} items, {len(days)} dates, {len(kept)} kept, "
        f"{len(refs.covering_days)} kept with an item covering the AOI; "
        f"read concurrency {rows[0][2].get('concurrency', '') or 'as set'}"
    )
    print(
        f"floor {floor / 2**20:.2f} MiB (SCL of every date + bands of the covering item on kept dates) = "
        f"{floor / max(all_items, 1):.2f}x the all-items reference {all_items / 2**20:.2f} MiB"
    )
    print(
        f"{'contender':10s} {'latency':>8s} {'wall s':>8s} {'cpu s':>8s} {'requests':>9s} {'MiB':>8s} "
        f"{'/floor':>7s} {'/all':>6s} {'band B rej':>10s} {'redund B':>9s} {'wall/odc-pool':>14s} {'wall/odc-seq':>13s}"
    )
    pool_wall = {lat: res["wall"] for kind, lat, res, *_ in rows if kind == "odc-pool"}
    seq_wall = {lat: res["wall"] for kind, lat, res, *_ in rows if kind == "odc-seq"}
    for kind, lat, res, nreq, by_path, _ in rows:
        total = sum(by_path.values())
        band_rej = sum(n for p, n in by_path.items() if p in refs.rejected_bands)
        redundant = sum(n for p, n in by_path.items() if p in refs.redundant_bands)
        r_pool = f"{res['wall'] / pool_wall[lat]:.2f}x" if lat in pool_wall else "-"
        r_seq = f"{res['wall'] / seq_wall[lat]:.2f}x" if lat in seq_wall else "-"
        print(
            f"{kind:10s} {lat:6g}ms {res['wall']:8.1f} {res['cpu']:8.1f} {nreq:9d} {total / 2**20:8.2f} "
            f"{total / max(floor, 1):6.2f}x {total / max(all_items, 1):5.2f}x {band_rej:10d} {redundant:9d} "
            f"{r_pool:>14s} {r_seq:>13s}"
        )
    if log_items:
        for kind, lat, _, _, by_path, _ in rows:
            if kind == "scarmon":
                print(f"scarmon at {lat:g} ms, bytes read per item on kept dates with a covering item:")
                _log_items(items, refs, by_path, site)
    sc = next((r for r in rows if r[0] == "scarmon"), None)
    od = next((r for r in rows if r[0] == "odc-pool"), None)
    if sc and od:
        _compare_ndvi(sc, od, set(refs.covering_days))


def _compare_ndvi(sc: Any, od: Any, covering_days: set[str]) -> None:
    """NDVI of scarmon vs odc-stac per kept date, apart on the dates where one item covers the AOI: there scarmon
    takes every pixel from that item and odc-stac the overlap from the first item in id order (another tile of the
    same world, other noise, another resampling path), so the two differ by more than quantisation."""
    diffs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for day in sorted(set(sc[2]["kept"]) & set(od[2]["kept"])):
        a, b = np.load(sc[5] / f"ndvi_{day}.npy"), np.load(od[5] / f"ndvi_{day}.npy")
        both = np.isfinite(a) & np.isfinite(b)
        worst = float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0
        diffs[day in covering_days].append((worst, float(np.mean(np.isfinite(a) != np.isfinite(b)))))
    print(f"kept dates identical: {sc[2]['kept'] == od[2]['kept']}; NDVI scarmon vs odc-stac:")
    for covering, what in ((False, "without a covering item"), (True, "with a covering item (other tile)")):
        if ds := diffs[covering]:
            print(
                f"  {len(ds)} dates {what}: max abs diff {max(d for d, _ in ds):.2e} (int16 quantisation 5e-05), "
                f"valid-mask mismatch at most {max(m for _, m in ds):.2%} of pixels"
            )


if __name__ == "__main__":
    main()
