"""The one stage runner and the errors people see: every site-writing command holds the site lock (a second run
at the same time is refused with a clear line and exit status 75), bad input gives the same one line through every
path (`run`, `monitor`, the flow run's state) and is never retried, transient errors are, shared documents that
cannot be read are refused by name and never replaced."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="scarmon-prefect-"))
os.environ.setdefault("SCARMON_TASK_RETRY_DELAYS", "0,0,0")

from scarmon import defaults  # noqa: E402
from scarmon.cli import EXIT_BUSY, main  # noqa: E402
from scarmon.demo.synthetic import demo_site, generate_catalog  # noqa: E402
from scarmon.errors import ScarmonError, is_transient  # noqa: E402
from scarmon.service import runner  # noqa: E402
from scarmon.site import SiteError, load_site  # noqa: E402
from scarmon.store import keys  # noqa: E402
from scarmon.store.backends import Conflict, LocalStore  # noqa: E402
from scarmon.store.documents import CorruptDocument, update_document  # noqa: E402
from scarmon.store.lock import site_lock  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A site ingested and tracked over four weeks of a synthetic catalog (store copied per test)."""
    root = tmp_path_factory.mktemp("tracked")
    site = demo_site("creep-failure")
    items = generate_catalog(root / "catalog", site, scenario="creep-failure", start="2021-06-01", end="2021-06-30")
    site_file = _write(root / "site.yaml", site)
    result = CliRunner().invoke(
        main, ["run", "--site", str(site_file), "--catalog", str(items), "--store", str(root / "store")]
    )
    assert result.exit_code == 0, result.output
    return site_file, str(items), root / "store"


def _bad_site_files(folder: Path) -> dict[str, Path]:
    good = demo_site()
    files = {
        "missing key": _write(folder / "nokey.yaml", {k: v for k, v in good.items() if k != "aoi"}),
        "bad id": _write(folder / "badid.yaml", {**good, "id": "Has Spaces/and slash"}),
        "yaml syntax": folder / "syntax.yaml",
        "missing file": folder / "absent.yaml",
        "binary": folder / "binary.yaml",
        "oversized": folder / "huge.yaml",
    }
    files["yaml syntax"].write_text("id: x\naoi: [unclosed\n")
    files["binary"].write_bytes(bytes(range(256)) * 4)
    files["oversized"].write_text("# padding\n" * (defaults.SITE_FILE_MAX_BYTES // 10 + 1))
    return files


def test_site_file_errors_name_the_file_and_the_problem(tmp_path):
    files = _bad_site_files(tmp_path)
    expected = {
        "missing key": "aoi",
        "bad id": "id",
        "yaml syntax": "not valid YAML",
        "missing file": "cannot read",
        "binary": "not a text file",
        "oversized": f"limit is {defaults.SITE_FILE_MAX_BYTES:,} bytes",
    }
    for what, path in files.items():
        with pytest.raises(SiteError) as err:
            load_site(path)
        assert str(path) in str(err.value) and expected[what] in str(err.value), (what, str(err.value))
        assert "\n" not in str(err.value).strip()


def test_bad_site_file_same_line_through_run_and_monitor(tmp_path):
    for what, path in _bad_site_files(tmp_path).items():
        outs = []
        for cmd in ("run", "monitor"):
            r = CliRunner().invoke(
                main,
                [cmd, "--site", str(path), "--store", str(tmp_path / "s"), "--catalog", str(tmp_path / "none.json")],
            )
            assert r.exit_code == 1, (what, cmd, r.output)
            assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
            outs.append(r.output.strip())
        assert outs[0] == outs[1], (what, outs)
        assert outs[0].startswith("Error: ") and str(path) in outs[0]


def test_flow_run_of_a_bad_site_file_fails_with_that_line_and_no_retry(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    import scarmon.ingest.pipeline
    from scarmon.ingest.discovery import CatalogError
    from scarmon.service.flows import monitor_site

    bad = _bad_site_files(tmp_path)["missing key"]
    good = _write(tmp_path / "good.yaml", demo_site())
    calls = {"n": 0}

    def broken_catalog(*a, **kw):
        calls["n"] += 1
        raise CatalogError("item S2X_bad of static catalog x.json has no geometry; fix or remove the item")

    with prefect_test_harness(server_startup_timeout=120):
        state = monitor_site(str(bad), store=str(tmp_path / "s"), catalog=str(tmp_path / "x.json"), return_state=True)
        assert state.is_failed() and str(bad) in state.message and "aoi" in state.message
        monkeypatch.setattr(scarmon.ingest.pipeline, "ingest", broken_catalog)
        state = monitor_site(str(good), store=str(tmp_path / "s"), catalog=str(tmp_path / "x.json"), return_state=True)
        assert state.is_failed() and "has no geometry" in state.message
        assert calls["n"] == 1  # deterministic: not retried

        def flaky(*a, **kw):
            calls["n"] += 1
            raise ConnectionError("connection reset by peer")

        calls["n"] = 0
        monkeypatch.setattr(scarmon.ingest.pipeline, "ingest", flaky)
        state = monitor_site(str(good), store=str(tmp_path / "s"), catalog=str(tmp_path / "x.json"), return_state=True)
        assert state.is_failed() and calls["n"] == defaults.TASK_RETRIES + 1  # transient: retried by policy
        assert not LocalStore(tmp_path / "s").exists(keys.lock(demo_site()["id"]))  # the lock was released


def test_in_process_retries_only_transient_errors():
    calls = []

    def fails(exc):
        def fn():
            calls.append(exc)
            raise exc

        return fn

    for exc, tries in (
        (SiteError("x.yaml: key 'aoi': missing"), 1),
        (ValueError("bad"), 1),
        (ConnectionError("reset"), defaults.TASK_RETRIES + 1),
        (Conflict("lost a race"), defaults.TASK_RETRIES + 1),
    ):
        calls.clear()
        with pytest.raises(type(exc)):
            runner.run_retrying("ingest", fails(exc))
        assert len(calls) == tries, (exc, len(calls))
    calls.clear()
    with pytest.raises(ConnectionError):
        runner.run_retrying("track", fails(ConnectionError("reset")))  # track has no retry policy
    assert len(calls) == 1
    assert is_transient(Conflict("x")) and not is_transient(CorruptDocument("x")) and not is_transient(KeyError())


def test_every_site_writing_command_refuses_a_busy_site(tracked, tmp_path):
    site_file, items, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    site = load_site(site_file)
    st = LocalStore(store)
    before = st.get(keys.manifest(site.id))
    commands = [
        ["ingest", "--catalog", items],
        ["track"],
        ["run", "--catalog", items],
        ["publish"],
        ["refine", "--date", "2021-06-02", "--point", "96.0,31.1,1"],
        ["alerts", "--send"],
    ]
    with site_lock(st, site.id, owner="other-host:4242:abcd"):
        for cmd in commands:
            r = CliRunner().invoke(main, [cmd[0], "--site", str(site_file), "--store", str(store), *cmd[1:]])
            assert r.exit_code == EXIT_BUSY, (cmd, r.output)
            assert f"site {site.id} is busy (run by other-host:4242:abcd" in r.output and "try again later" in r.output
        with pytest.raises(ScarmonError, match="is busy"):
            runner.refine(site, st, date=load_date(st, site.id), points=[(*site.polygon.centroid.coords[0], 1)])
    assert st.get(keys.manifest(site.id)) == before  # nothing was written while another run held the site
    assert not st.exists(keys.corrections(site.id))


def load_date(st, site_id):
    import datetime as dt

    from scarmon.store.sequence import load_manifest

    return dt.date.fromisoformat(load_manifest(st, site_id)[0].frames[0].date)


def test_two_runs_at_once_one_works_one_is_busy(tracked, tmp_path):
    """Two real processes on the same site: exactly one does the work, the other exits 75 naming the holder."""
    site_file, items, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    cmd = [
        sys.executable,
        "-m",
        "scarmon.cli",
        "track",
        "--site",
        str(site_file),
        "--store",
        str(store),
        "--from-start",
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read() + p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    if codes == [0, 0]:  # the first finished before the second started: not overlapping, try a slower pair
        pytest.skip("the two runs did not overlap on this machine")
    assert codes == [0, EXIT_BUSY], results
    busy = next(out for code, out in results if code == EXIT_BUSY)
    assert "is busy (run by" in busy and "Traceback" not in busy


def test_commands_that_need_a_site_refuse_a_wrong_store(tracked, tmp_path):
    site_file, _, _ = tracked
    empty = tmp_path / "elsewhere"
    site_id = load_site(site_file).id
    for cmd in (
        ["track"],
        ["publish"],
        ["alerts"],
        ["refine", "--list"],
        ["refine", "--date", "2021-06-02", "--point", "96,31,1"],
    ):
        r = CliRunner().invoke(main, [cmd[0], "--site", str(site_file), "--store", str(empty), *cmd[1:]])
        assert r.exit_code == 1, (cmd, r.output)
        assert f"no sequence for site {site_id} in store" in r.output and "Traceback" not in r.output
        assert not (empty / site_id).exists()


def test_read_only_store_is_one_line(tracked, tmp_path):
    site_file, items, store0 = tracked
    store = tmp_path / "ro-store"
    shutil.copytree(store0, store)
    if os.geteuid() == 0:  # root ignores permission bits: make the files immutable instead (ext4, xfs, btrfs)
        made = subprocess.run(["chattr", "-R", "+i", str(store)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot make a read-only folder as root here: {made.stderr.strip()}")
    else:
        for p in [store, *store.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "scarmon.cli",
                "track",
                "--site",
                str(site_file),
                "--store",
                str(store),
                "--from-start",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", str(store)], check=True)
        else:
            for p in [store, *store.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and str(store) in lines[-1], out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_shared_documents_are_refused_by_name_and_kept(tracked, tmp_path):
    site_file, _, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    st = LocalStore(store)
    for key in (keys.SITES_INDEX, keys.ROOT_CATALOG):
        st.put(key, b"{ this is not json")
        r = CliRunner().invoke(main, ["publish", "--site", str(site_file), "--store", str(store)])
        assert r.exit_code == 1 and key in r.output and "will not overwrite it" in r.output, r.output
        assert st.get(key) == b"{ this is not json"  # never replaced by a document holding only this site
        st.delete(key)
    r = CliRunner().invoke(main, ["publish", "--site", str(site_file), "--store", str(store)])
    assert r.exit_code == 0, r.output


def test_update_document_retries_lost_races_and_applies_each_change_once(tmp_path):
    st = LocalStore(tmp_path)
    key = "doc.json"
    st.put(key, b'{"n": 0}')
    raced = {"left": 3}

    def change(doc):
        if raced["left"]:  # another run writes between our read and our conditional write
            raced["left"] -= 1
            st.put(key, json.dumps({"n": json.loads(st.get(key))["n"] + 10}).encode())
        return {"n": doc["n"] + 1}

    out = update_document(st, key, change, parse=json.loads, dump=lambda d: json.dumps(d).encode(), what="counter")
    assert out == {"n": 31} and json.loads(st.get(key)) == {"n": 31}


def test_store_layout_doc_is_generated_from_the_keys_module():
    assert (ROOT / "docs" / "store-layout.md").read_text() == keys.layout_markdown()


def test_library_never_imports_the_flows_folder():
    for path in (ROOT / "scarmon").rglob("*.py"):
        text = path.read_text()
        assert "from flows" not in text and "import flows" not in text, path


def test_refine_is_one_operation_stores_retracks_rebuilds_alerts_and_republishes(tracked, tmp_path):
    from scarmon.alerts.history import outbox, read_history
    from scarmon.tracking.corrections import list_corrections

    site_file, _, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    site = load_site(site_file)
    st = LocalStore(store)
    day = load_date(st, site.id)
    point = (*site.polygon.centroid.coords[0], 0)
    plain = runner.refine(site, st, date=day, points=[point])
    assert plain.tick is not None and plain.tick.stages == ["track", "alert"]  # no products yet: none written
    assert not st.exists(keys.products_index(site.id))
    runner.run_stages(site, st, None, ("publish",))
    again = runner.refine(site, st, undo=plain.corrections[0])
    assert again.tick is not None and again.tick.stages == ["track", "alert", "publish"]
    assert any("published" in ln or "product" in ln for ln in again.tick.lines), again.tick.lines
    assert list_corrections(st, site.id) == [] and outbox(st, site.id) == []  # nothing queued to people
    assert all(r.get("note") == "refine" for r in read_history(st, site.id) if r.get("recorded_at"))
    stored = runner.refine(site, st, date=day, points=[point], retrack=False)
    assert stored.tick is None and len(list_corrections(st, site.id)) == 1  # stored only; next tick re-tracks
    from scarmon.store.sequence import load_manifest

    assert load_manifest(st, site.id)[0].dirty_from is not None


def test_a_failed_tick_is_recorded_in_status_json(tracked, tmp_path, monkeypatch):
    import scarmon.tracking.pipeline

    site_file, items, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    site = load_site(site_file)
    st = LocalStore(store)

    def broken(*a, **kw):
        raise OSError("disk full while writing masks")

    monkeypatch.setattr(scarmon.tracking.pipeline, "track_site", broken)
    from scarmon.ingest.discovery import open_catalog

    with pytest.raises(OSError):
        runner.tick(site, st, open_catalog(items), opts=runner.TickOptions(notify=False))
    status = json.loads(st.get(keys.status(site.id)))
    assert status["outcome"] == "failed" and status["last_error"] == "disk full while writing masks"
    assert not st.exists(keys.lock(site.id))


def test_monitor_of_a_folder_with_a_busy_site_exits_75(tracked, tmp_path):
    site_file, items, store0 = tracked
    store = tmp_path / "store"
    shutil.copytree(store0, store)
    sites = tmp_path / "sites"
    sites.mkdir()
    shutil.copy(site_file, sites / "one.yaml")
    site = load_site(site_file)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), site_lock(LocalStore(store), site.id, owner="x:1:ab"):
        r = CliRunner().invoke(
            main, ["monitor", "--sites", str(sites), "--store", str(store), "--catalog", items, "--no-notify"]
        )
    assert r.exit_code == EXIT_BUSY, r.output
    assert "one.yaml: busy" in r.output and "try again later" in r.output
