"""Many sites, measured: seconds per site, peak memory per worker and Prefect API calls per site of one monitoring
tick over N synthetic sites, with new scenes and without, on threads and on a Dask LocalCluster.

    .venv/bin/python bench/scale_bench.py                        # 20 sites, threads and Dask (a few minutes)
    .venv/bin/python bench/scale_bench.py --sites 20,100,300     # the full table (run once)
    .venv/bin/python bench/scale_bench.py --modes prefect-dask   # the previous path: a Prefect task per site

Everything runs on 127.0.0.1: the store is S3 on a moto server, the catalog the local STAC API (stac-fastapi-pgstac;
`--catalog static` uses the static ItemCollection instead), and the flows report to a Prefect API server started here
(SQLite) behind a middleware that counts its HTTP requests and websocket messages (events), so API calls are what
the server really received, from the flow process and from every worker.

Sites: the demo AOI (2 x 2 km) at 10 m on a 2-week synthetic catalog (3 acquisitions, both UTM tiles), all site ids
over the same AOI: a site's work is the same at every N, so cost per site should stay flat. Each (mode, N) runs in a
fresh process so that peak memory (ru_maxrss of each process that ran sites) belongs to that run alone. The first
tick ingests, tracks, alerts and publishes every site; the second finds no new scene. Dask: the cluster start is
printed on its own; both ticks reuse it (one cluster per process).

Figures are printed, never asserted: this machine is shared and its load varies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "120s",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "SCARMON_TASK_RETRY_DELAYS": "1,1,1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- the Prefect API server, counting what it receives -------------------------------------------------------------

COUNT_PATH = "/__scarmon_bench_count"


def serve_prefect(port: int) -> None:
    """(subprocess) Prefect's API on 127.0.0.1:port; GET COUNT_PATH returns the counts so far."""
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app()
    counts = {"http": 0, "ws_messages": 0}

    async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == COUNT_PATH:
            body = json.dumps(counts).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            counts["http"] += 1
        elif scope["type"] == "websocket":

            async def counted() -> Any:
                msg = await receive()
                if msg.get("type") == "websocket.receive":
                    counts["ws_messages"] += 1
                return msg

            return await app(scope, counted, send)
        await app(scope, receive, send)

    uvicorn.run(counting, host="127.0.0.1", port=port, log_level="warning")


def api_counts(api: str) -> dict[str, int]:
    import urllib.request

    base = api.rsplit("/api", 1)[0]
    return dict(json.loads(urllib.request.urlopen(base + COUNT_PATH, timeout=30).read()))


# --- one (mode, N) measurement, in its own process ------------------------------------------------------------------


def old_prefect_dask(sites_dir: str, n_workers: int, **kw: Any) -> Any:
    """The path before this benchmark: monitor_all with a Prefect task per site on a prefect-dask DaskTaskRunner
    (a new LocalCluster per flow run). Rebuilt here to measure it against the current one."""
    from prefect import flow, task
    from prefect.cache_policies import NONE
    from prefect_dask import DaskTaskRunner

    from scarmon.service.fanout import run_site
    from scarmon.service.flows import site_files

    site_task = task(run_site, name="site-tick", cache_policy=NONE)

    @flow(
        name="monitor-all-prefect-dask",
        task_runner=DaskTaskRunner(  # type: ignore[arg-type]
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": n_workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            },
        ),
    )
    def old(sites_dir: str, store: str, catalog: str, end: Any = None, notify: bool = False) -> dict[str, Any]:
        futs = {
            f.name: site_task.submit(str(f), store, catalog, None, None, end, notify) for f in site_files(sites_dir)
        }
        results = {k: f.result() for k, f in futs.items()}
        return {"results": results, "ok": sorted(results), "busy": [], "failed": {}}

    return old(sites_dir, kw["store"], kw["catalog"], notify=False)


def measure(mode: str, n: int, sites_dir: str, store: str, catalog: str, workers: int, api: str) -> dict[str, Any]:
    from scarmon.service.flows import monitor_all

    out: dict[str, Any] = {"mode": mode, "sites": n}
    if mode == "dask":
        from scarmon.service.dask import close_clients, dask_client, monitor_all_on_dask

        t0 = time.perf_counter()
        dask_client(n_workers=workers).run(lambda: None)  # the cluster is up and its workers answer
        out["cluster_start_s"] = time.perf_counter() - t0

    def run() -> Any:
        if mode == "dask":
            return monitor_all_on_dask(
                sites_dir, store=store, catalog=catalog, notify=False, n_workers=workers, return_state=True
            )
        if mode == "prefect-dask":
            return old_prefect_dask(sites_dir, workers, store=store, catalog=catalog)
        return monitor_all(sites_dir, store=store, catalog=catalog, notify=False, return_state=True)

    for tick in ("new", "noop"):
        before = api_counts(api)
        t0 = time.perf_counter()
        state = run()
        seconds = time.perf_counter() - t0
        after = api_counts(api)
        summary = state if isinstance(state, dict) else state.result(raise_on_failure=False)
        summary = getattr(summary, "summary", summary)
        if not isinstance(summary, dict):
            raise RuntimeError(f"{mode} x {n}, tick {tick}: the flow failed: {state.message}")
        results = summary["results"]
        peak: dict[int, float] = {}
        for r in results.values():
            peak[r["pid"]] = max(peak.get(r["pid"], 0.0), r.get("peak_rss_mb", 0.0))
        out[tick] = {
            "seconds": seconds,
            "per_site_s": seconds / n,
            "ok": len(summary["ok"]),
            "busy": len(summary.get("busy", [])),
            "failed": len(summary["failed"]),
            "appended": sum(r["appended"] for r in results.values()),
            "api_http": after["http"] - before["http"],
            "api_ws": after["ws_messages"] - before["ws_messages"],
            "workers": len(peak),
            "peak_rss_mb_max": max(peak.values(), default=0.0),
            "peak_rss_mb_min": min(peak.values(), default=0.0),
            "site_s_sum": sum(r["seconds"] for r in results.values()),
        }
        if summary["failed"]:
            out[tick]["first_failure"] = next(iter(summary["failed"].items()))
    if mode == "dask":
        close_clients()
    out["bench_process_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- the world ------------------------------------------------------------------------------------------------------


def make_world(work: Path, sizes: list[int], empty: bool = False) -> tuple[Path, dict[int, Path]]:
    import yaml

    from scarmon.demo.synthetic import demo_site, generate_catalog

    site = demo_site("creep-failure")
    items = generate_catalog(work / "catalog", site, scenario="creep-failure", start="2021-06-01", end="2021-06-15")
    folders = {}
    for n in sizes:
        folder = work / f"sites-{n}"
        folder.mkdir()
        for i in range(n):
            extra = {"start": "2023-01-01"} if empty else {}  # after the catalog's last scene: nothing to ingest
            doc = json.loads(json.dumps({**site, "id": f"site-{i:03d}", "resolution_m": 10, **extra}, default=str))
            (folder / f"site-{i:03d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        folders[n] = folder
    return items, folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", default="20", help="comma-separated site counts (default 20)")
    ap.add_argument("--modes", default="threads,dask", help="threads, dask, prefect-dask (the previous path)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    ap.add_argument("--catalog", choices=("stac", "static"), default="stac")
    ap.add_argument(
        "--empty",
        action="store_true",
        help="sites whose search window lies after the catalog: both ticks find nothing (the fan-out's own "
        "cost, affordable at hundreds of sites on a small machine)",
    )
    ap.add_argument("--serve-prefect", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one", nargs=6, metavar=("MODE", "N", "SITES", "STORE", "CATALOG", "API"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k not in os.environ})
    if args.serve_prefect:
        serve_prefect(args.serve_prefect)
        return
    if args.one:
        mode, n, sites, store, catalog, api = args.one
        print("RESULT " + json.dumps(measure(mode, int(n), sites, store, catalog, args.workers, api)), flush=True)
        return

    import boto3
    from moto.server import ThreadedMotoServer

    from tests.fixtures_s3 import _Serialized

    sizes = [int(x) for x in args.sites.split(",")]
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="scarmon-scale-"))
    t0 = time.perf_counter()
    items, folders = make_world(work, sizes, args.empty)
    print(f"world: catalog and {sum(sizes)} site files in {time.perf_counter() - t0:.0f} s ({work})", flush=True)

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    inner = getattr(moto, "_server", None)
    if inner is not None and hasattr(inner, "app"):
        inner.app = _Serialized(inner.app)  # conditional puts decided atomically, as S3 does
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["SCARMON_S3_ENDPOINT_URL"] = endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")

    prefect_home = work / "prefect-home"
    prefect_home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PYTHONPATH": str(ROOT)}
    pport = free_port()
    api = f"http://127.0.0.1:{pport}/api"
    server = subprocess.Popen([sys.executable, __file__, "--serve-prefect", str(pport)], env=env, cwd=ROOT)
    procs: list[Any] = [server]
    try:
        t0 = time.perf_counter()
        wait_http(api + "/health")
        print(f"Prefect API (SQLite) {api} up in {time.perf_counter() - t0:.0f} s; S3 (moto) {endpoint}", flush=True)
        env["PREFECT_API_URL"] = api
        catalog = str(items)
        if args.catalog == "stac":
            from tests.stac_api import start_stac_api

            stac = start_stac_api(work / "stac")
            procs.append(stac)
            stac.load_collection(json.loads((items.parent / "collection.json").read_text()))
            stac.load_items(json.loads(items.read_text())["features"])
            catalog = stac.url
            print(f"local STAC API {stac.url} up in {stac.startup_seconds:.0f} s", flush=True)
        rows = []
        for n in sizes:
            for mode in modes:
                store = f"s3://bench/{mode}-{n}"
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--workers",
                        str(args.workers),
                        "--one",
                        mode,
                        str(n),
                        str(folders[n]),
                        store,
                        catalog,
                        api,
                    ],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(f"{mode} x {n}: failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", flush=True)
                    continue
                row = json.loads(line[len("RESULT ") :])
                rows.append(row)
                print(json.dumps(row), flush=True)
        print_table(rows)
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                p.terminate()
                p.wait(timeout=30)
            else:
                p.stop()
        moto.stop()


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| mode | sites | tick | s/site | site s (sum/N) | ok/busy/failed | appended | peak RSS/worker MB "
        "(min-max, workers) | API HTTP/site | events/site | cluster start s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for tick in ("new", "noop"):
            t = r[tick]
            n = r["sites"]
            print(
                f"| {r['mode']} | {n} | {tick} | {t['per_site_s']:.3f} | {t['site_s_sum'] / n:.3f} | "
                f"{t['ok']}/{t['busy']}/{t['failed']} | {t['appended']} | {t['peak_rss_mb_min']:.0f}-"
                f"{t['peak_rss_mb_max']:.0f} ({t['workers']}) | {t['api_http'] / n:.2f} | {t['api_ws'] / n:.2f} | "
                f"{r.get('cluster_start_s', float('nan')):.1f} |"
            )
    by = {(r["mode"], r["sites"]): r for r in rows}
    sizes = sorted({r["sites"] for r in rows})
    for mode in sorted({r["mode"] for r in rows}):
        if (mode, sizes[0]) in by and (mode, sizes[-1]) in by and sizes[0] != sizes[-1]:
            for tick in ("new", "noop"):
                a, b = by[(mode, sizes[0])][tick]["per_site_s"], by[(mode, sizes[-1])][tick]["per_site_s"]
                print(f"{mode} {tick}: per-site cost at {sizes[-1]} sites / at {sizes[0]}: {b / a:.2f} (target <= 1.2)")
    for n in sizes:
        if ("dask", n) in by and ("threads", n) in by:
            ratio = by[("dask", n)]["noop"]["seconds"] / by[("threads", n)]["noop"]["seconds"]
            print(f"{n} sites, no-op tick: Dask / threads = {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
