"""Prefect flows: a tick through monitor_site (ephemeral Prefect via prefect_test_harness), idempotent re-runs,
the per-site lock, monitor_all with one failing site, and the Dask path on a LocalCluster of 2 worker processes."""

import json
import os
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="scarmon-prefect-"))
os.environ.setdefault("SCARMON_TASK_RETRY_DELAYS", "0,0,0")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from scarmon.alerts.history import read_history  # noqa: E402
from scarmon.demo.synthetic import demo_site, generate_catalog  # noqa: E402
from scarmon.store import keys
from scarmon.store.backends import LocalStore  # noqa: E402
from scarmon.store.lock import SiteBusy, site_lock  # noqa: E402


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A short synthetic catalog (4 weeks) and a folder of three site files over it."""
    root = tmp_path_factory.mktemp("world")
    site = demo_site("creep-failure")
    items = generate_catalog(root / "catalog", site, scenario="creep-failure", start="2021-06-01", end="2021-06-25")
    sites = root / "sites"
    sites.mkdir()
    for i in range(3):
        (sites / f"s{i}.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps({**site, "id": f"s{i}"}, default=str)), sort_keys=False)
        )
    return root, sites, str(items)


def test_monitor_site_tick_and_rerun_is_idempotent(harness, world, tmp_path):
    from scarmon.service.flows import monitor_site

    _, sites, items = world
    store = str(tmp_path / "store")
    r1 = monitor_site(str(sites / "s0.yaml"), store=store, catalog=items)
    assert r1["status"] == "ok" and r1["appended"] >= 2 and r1["tracked"] == r1["appended"]
    st = LocalStore(store)
    assert st.exists("s0/series.json") and st.exists("s0/status.json") and st.exists("s0/alerts/state.json")
    before = {k: st.get(k) for k in st.list("s0/") if not k.endswith("status.json")}
    r2 = monitor_site(str(sites / "s0.yaml"), store=store, catalog=items)
    assert r2["appended"] == 0 and r2["tracked"] == 0 and r2["events"] == [] and r2["sent"] == []
    after = {k: st.get(k) for k in st.list("s0/") if not k.endswith("status.json")}
    assert after == before  # nothing appended, re-tracked or re-alerted
    assert not st.exists(keys.lock("s0"))


def test_site_lock_one_run_at_a_time(harness, world, tmp_path):
    from scarmon.service.flows import monitor_all, monitor_site

    _, sites, items = world
    store = LocalStore(tmp_path / "store")
    with site_lock(store, "s1"):
        with pytest.raises(SiteBusy):
            with site_lock(store, "s1"):
                pass
        state = monitor_site(str(sites / "s1.yaml"), store=str(store.root), catalog=items, return_state=True)
        r = state.result(_sync=True)  # sync whatever event loop earlier tests left behind
        assert r["status"] == "busy" and not store.exists("s1/manifest.json")
        assert state.is_completed() and state.name == "Busy" and "busy" in state.message  # visible, not "Completed"
        whole = monitor_all(str(sites), store=str(store.root), catalog=items, notify=False, return_state=True)
        summary = whole.result(_sync=True)
        assert whole.name == "Busy" and "s1.yaml" in whole.message
        assert summary["busy"] == ["s1.yaml"] and summary["ok"] == ["s0.yaml", "s2.yaml"] and not summary["failed"]
    # two runs at once: exactly one does the work
    out = []
    threads = [
        threading.Thread(
            target=lambda: out.append(monitor_site(str(sites / "s1.yaml"), store=str(store.root), catalog=items))
        )
        for _ in range(2)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(r["status"] for r in out) in (["busy", "ok"], ["ok", "ok"])
    assert sum(r["appended"] for r in out) == len(json.loads(store.get("s1/manifest.json"))["frames"])


def test_store_and_catalog_from_the_environment(harness, world, tmp_path, monkeypatch):
    """A job sets SCARMON_STORE / SCARMON_CATALOG once; flow parameters left unset take them."""
    from scarmon.service.flows import monitor_site

    _, sites, items = world
    monkeypatch.setenv("SCARMON_STORE", str(tmp_path / "env-store"))
    monkeypatch.setenv("SCARMON_CATALOG", items)
    r = monitor_site(str(sites / "s2.yaml"), notify=False)
    assert r["status"] == "ok" and r["appended"] >= 2
    assert LocalStore(tmp_path / "env-store").exists("s2/manifest.json")


def test_stale_lock_is_taken_over(tmp_path):
    store = LocalStore(tmp_path)
    store.put(keys.lock("x"), json.dumps({"owner": "dead", "since": "2020-01-01T00:00:00+00:00", "ttl_s": 60}).encode())
    with site_lock(store, "x") as token:
        assert json.loads(store.get(keys.lock("x")))["owner"] == token
    assert not store.exists(keys.lock("x"))


def test_monitor_all_reports_a_failing_site_without_stopping_others(harness, world, tmp_path, monkeypatch):
    import scarmon.ingest.pipeline
    from scarmon.service.flows import SitesFailed, monitor_all

    _, sites, items = world
    real = scarmon.ingest.pipeline.ingest

    def flaky(site, *a, **kw):
        if site.id == "s2":
            raise RuntimeError("catalog exploded for s2")
        return real(site, *a, **kw)

    monkeypatch.setattr(scarmon.ingest.pipeline, "ingest", flaky)
    store = tmp_path / "store"
    state = monitor_all(str(sites), store=str(store), catalog=items, return_state=True)
    assert state.is_failed()
    with pytest.raises(SitesFailed, match="s2.yaml.*catalog exploded"):
        state.result(_sync=True)  # sync whatever event loop earlier tests left behind
    st = LocalStore(store)
    assert st.exists("s0/series.json") and st.exists("s1/series.json") and not st.exists("s2/series.json")


def test_backfill_records_alert_history_without_sending(harness, world, tmp_path):
    import datetime as dt

    from scarmon.service.flows import backfill

    _, sites, items = world
    store = tmp_path / "store"
    r = backfill(str(sites / "s0.yaml"), dt.date(2021, 6, 1), dt.date(2021, 6, 25), store=str(store), catalog=items)
    assert r["appended"] >= 2 and r["sent"] == [] and not LocalStore(store).list("s0/alerts/outbox/")


@pytest.mark.slow
def test_dask_path_runs_sites_on_two_worker_processes(harness, world, tmp_path):
    from scarmon.service.dask import close_clients, monitor_all_on_dask

    _, sites, items = world
    summary = monitor_all_on_dask(str(sites), store=str(tmp_path / "store"), catalog=items, n_workers=2)
    pids = {r["pid"] for r in summary["results"].values()}
    assert summary["ok"] == ["s0.yaml", "s1.yaml", "s2.yaml"] and not summary["failed"]
    assert os.getpid() not in pids and len(pids) >= 2, pids
    assert all(r["appended"] >= 2 for r in summary["results"].values())
    close_clients()  # the LocalCluster is kept for later runs in this process; not past this test


def test_alert_history_from_a_tick_has_the_fields(harness, world, tmp_path):
    """With relaxed rules the short synthetic series alerts; the history rows carry the documented fields."""
    from scarmon.service.flows import monitor_site

    root, sites, items = world
    site = yaml.safe_load((sites / "s0.yaml").read_text())
    site.update(
        id="alerty",
        alerts={
            "warmup_days": 0,
            "watch": {"pct": 0.001, "m2": 0},
            "warning": {"pct": 1e6, "m2": 0},
            "alarm": {"pct": 2e6, "m2": 0},
        },
    )
    f = tmp_path / "alerty.yaml"
    f.write_text(yaml.safe_dump(site))
    store = tmp_path / "store"
    monitor_site(str(f), store=str(store), catalog=items)
    rows = read_history(LocalStore(store), "alerty")
    for r in rows:
        assert {"site", "date", "level", "state", "area_m2", "baseline_m2"} <= set(r)


def test_prefect_yaml_is_current_and_one_deployment_per_site():
    import importlib.util

    from scarmon.site import load_site

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("mk", root / "deploy" / "make_prefect_yaml.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    assert (root / "deploy" / "prefect.yaml").read_text() == mk.prefect_yaml()
    doc = yaml.safe_load((root / "deploy" / "prefect.yaml").read_text())
    sites = {load_site(f).id: load_site(f) for f in (root / "sites").glob("*.yaml")}
    assert {d["name"] for d in doc["deployments"]} == set(sites)
    for d in doc["deployments"]:
        assert d["schedules"][0]["cron"] == sites[d["name"]].schedule
        assert d["work_pool"]["name"] == "scarmon-process" and d["concurrency_limit"] == 1
        module, fn = d["entrypoint"].split(":")
        assert _entrypoint(root / module, fn).name == "monitor-site"
    k8s = yaml.safe_load((root / "deploy" / "prefect-kubernetes.yaml").read_text())
    assert k8s["deployments"][0]["entrypoint"] == "flows/dask.py:monitor_all_dask"
    assert _entrypoint(root / "flows" / "dask.py", "monitor_all_dask").name == "monitor-all-dask"


def _entrypoint(path: Path, name: str):
    """Load a deployment entrypoint as Prefect does (a file path, then an attribute): it must be a Prefect flow."""
    import importlib.util

    from prefect import Flow

    spec = importlib.util.spec_from_file_location(f"entry_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    flow = getattr(mod, name)
    assert isinstance(flow, Flow)
    return flow


def test_refine_flow_stores_the_correction_and_retracks_from_its_frame(harness, world, tmp_path):
    import datetime as dt

    import numpy as np

    from scarmon.grid import SiteGrid
    from scarmon.service.flows import monitor_site, refine
    from scarmon.store.sequence import load_manifest
    from scarmon.tracking.corrections import list_corrections
    from scarmon.tracking.pipeline import read_mask

    _, sites, items = world
    site_file = str(sites / "s0.yaml")
    store = str(tmp_path / "store")
    monitor_site(site_file, store=store, catalog=items, notify=False)
    st = LocalStore(store)
    manifest, _ = load_manifest(st, "s0")
    grid = SiteGrid.from_dict(manifest.grid)
    last = manifest.frames[-1]
    before = read_mask(st, keys.mask("s0", last))
    rows, cols = np.nonzero(before)
    lon, lat = grid.pixel_to_lonlat(int(cols.max()) - 3, int(rows[np.argmax(cols)]))
    out = refine(site_file, store=store, date=dt.date.fromisoformat(last.date), points=[(float(lon), float(lat), 0)])
    assert len(out["corrections"]) == 1 and out["tracked"] == 1  # only the corrected (last) frame re-tracked
    assert [c["id"] for c in list_corrections(st, "s0")] == out["corrections"]
    assert read_mask(st, keys.mask("s0", last)).sum() < before.sum()
    undone = refine(site_file, store=store, undo=out["corrections"][0])
    assert undone["undone"] == out["corrections"][0] and list_corrections(st, "s0") == []
    assert np.array_equal(read_mask(st, keys.mask("s0", last)), before)
