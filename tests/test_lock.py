"""The site lease: renewed while a run works, taken over at once from a killed holder (a real `kill -9`), lost by a
run paused past it (a real SIGSTOP), which then writes nothing more; a busy skip is visible in the state's name.

Holders are real subprocesses on a local folder store and on S3 (moto on 127.0.0.1). Nothing here asserts a
duration: waits poll the stored lease document or the holder's output, each bounded so a broken lease fails the
test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="scarmon-prefect-"))

from scarmon.store import keys  # noqa: E402
from scarmon.store.backends import LocalStore, Store, open_store  # noqa: E402
from scarmon.store.lock import LeaseLost, SiteBusy, acquire, check_lease, held_lease, site_lock  # noqa: E402
from scarmon.store.sequence import FrameEntry, append, load_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = {"epsg": 32647, "resolution": 2.0, "x0": 0.0, "y0": 0.0, "width": 4, "height": 4}

# A run in another process: takes the lease, says so, waits for a line on stdin, then appends one frame.
HOLDER = r"""
import sys
from scarmon.store.backends import open_store
from scarmon.store.lock import LeaseLost, site_lock
from scarmon.store.sequence import FrameEntry, append

store, site, ttl, beat = open_store(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
grid = {"epsg": 32647, "resolution": 2.0, "x0": 0.0, "y0": 0.0, "width": 4, "height": 4}
with site_lock(store, site, ttl_s=ttl, heartbeat_s=beat) as token:
    print("held", token, flush=True)
    sys.stdin.readline()
    frame = FrameEntry(date="2022-01-09", scene_id="S2A_HOLDER", datetime="2022-01-09T04:00:00Z", item_ids=("i",),
                       processing_baseline="04.00", coverage=1.0, clear_fraction=1.0,
                       objects={"ndvi": f"{site}/frames/holder.tif"})
    try:
        append(store, site, frames=[frame], rejections=[], grid=grid, data={f"{site}/frames/holder.tif": b"x"})
    except LeaseLost as exc:
        print("lost", exc, flush=True)
        sys.exit(3)
    print("wrote", flush=True)
"""


def frame(site: str, day: int, name: str) -> FrameEntry:
    return FrameEntry(
        date=f"2022-01-0{day}",
        scene_id=f"S2A_{name}",
        datetime=f"2022-01-0{day}T04:00:00Z",
        item_ids=("i",),
        processing_baseline="04.00",
        coverage=1.0,
        clear_fraction=1.0,
        objects={"ndvi": f"{site}/frames/{name}.tif"},
    )


def start_holder(uri: str, site: str, ttl: float, beat: float) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri, site, str(ttl), str(beat)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the holder has the lease (or died)
    if not line.startswith("held "):
        proc.kill()
        raise AssertionError(f"holder did not start: {line!r} {proc.communicate()[1]}")
    return proc, line.split()[1]


def lease_doc(store: Store, site: str) -> dict:
    return json.loads(store.get(keys.lock(site)))


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_uri")


def test_lease_is_renewed_while_the_run_works_and_kept_past_its_ttl(tmp_path):
    store = LocalStore(tmp_path)
    with site_lock(store, "a", ttl_s=1.0, heartbeat_s=0.1) as token:
        first = lease_doc(store, "a")
        for _ in range(600):  # until the lease has been renewed well past one TTL after it was taken
            doc = lease_doc(store, "a")
            if doc["renewals"] >= 15:
                break
            time.sleep(0.05)
        assert doc["owner"] == token and doc["renewals"] >= 15 and doc["since"] == first["since"]
        assert doc["renewed_at"] > first["renewed_at"] and doc["expires_at"] > first["expires_at"]
        with pytest.raises(SiteBusy, match="busy .*renewed until"):
            acquire(store, "a", ttl_s=1.0)
        check_lease(store, "a")  # still ours: no exception
    assert not store.exists(keys.lock("a"))


def test_run_paused_past_its_lease_in_process_loses_it(tmp_path):
    """Without renewals (a paused run) the lease expires; a contender takes it; the old holder's check fails."""
    store = LocalStore(tmp_path)
    stale = acquire(store, "a", ttl_s=0.5, heartbeat_s=0.1)  # no heartbeat started: as if paused
    time.sleep(0.6)
    with site_lock(store, "a", ttl_s=30) as token:
        with pytest.raises(LeaseLost, match="expired"):
            stale.check()
        assert not stale.renew()  # a late heartbeat never overwrites the new holder
        stale.release()  # nor does giving it back
        assert lease_doc(store, "a")["owner"] == token


def test_foreign_holder_waits_for_expiry_and_legacy_lock_documents(tmp_path):
    store = LocalStore(tmp_path)
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))  # noqa: E731
    store.put(
        keys.lock("a"),
        json.dumps(
            {
                "owner": "other:1:x",
                "host": "another-host",
                "pid": 1,
                "since": iso(now),
                "renewed_at": iso(now),
                "ttl_s": 300,
            }
        ).encode(),
    )
    with pytest.raises(SiteBusy, match="other:1:x"):
        acquire(store, "a")  # another machine: not provably gone, and renewed recently
    store.put(
        keys.lock("a"),
        json.dumps(
            {
                "owner": "other:1:x",
                "host": "another-host",
                "pid": 1,
                "since": iso(now - 900),
                "renewed_at": iso(now - 600),
                "ttl_s": 300,
            }
        ).encode(),
    )
    with site_lock(store, "a") as token:  # expired: taken over
        assert lease_doc(store, "a")["owner"] == token
    store.put(keys.lock("b"), json.dumps({"owner": "old", "since": iso(now), "ttl_s": 21600}).encode())
    with pytest.raises(SiteBusy):
        acquire(store, "b")  # a lock of the previous format (no host/pid) waits for its TTL


def test_killed_holder_is_taken_over_at_once(store_uri):
    store = open_store(store_uri)
    proc, token = start_holder(store_uri, "k1", ttl=300, beat=60)
    try:
        assert lease_doc(store, "k1")["owner"] == token
        with pytest.raises(SiteBusy, match="busy"):
            acquire(store, "k1")  # alive: busy
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lease_doc(store, "k1")["owner"] == token  # kill -9 left the lease behind, valid for 5 more minutes
    with site_lock(store, "k1") as mine:  # ... yet it is taken over at once: its process is gone
        assert lease_doc(store, "k1")["owner"] == mine
        append(store, "k1", frames=[frame("k1", 1, "A")], rejections=[], grid=GRID, data={"k1/frames/A.tif": b"a"})
    assert [f.scene_id for f in load_manifest(store, "k1")[0].frames] == ["S2A_A"]
    assert not store.exists(keys.lock("k1"))


def test_holder_paused_past_its_lease_stops_before_its_next_write(store_uri):
    store = open_store(store_uri)
    proc, token = start_holder(store_uri, "p1", ttl=2.0, beat=0.3)
    try:
        proc.send_signal(signal.SIGSTOP)  # the run is paused (a stalled VM, a debugger, swap)
        for _ in range(600):  # until its lease has expired and a contender got it
            try:
                lease = site_lock(store, "p1", ttl_s=30)
                mine = lease.__enter__()
                break
            except SiteBusy:
                time.sleep(0.1)
        else:
            raise AssertionError("the paused holder's lease never expired")
        try:
            append(store, "p1", frames=[frame("p1", 1, "A")], rejections=[], grid=GRID, data={"p1/frames/A.tif": b"a"})
            proc.send_signal(signal.SIGCONT)  # the paused run wakes up and goes on to its next write
            out, err = proc.communicate("go\n", timeout=120)
            assert proc.returncode == 3, (out, err)
            assert "lost" in out and "wrote" not in out
            assert lease_doc(store, "p1")["owner"] == mine  # its heartbeat did not take the lease back
        finally:
            lease.__exit__(None, None, None)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert [f.scene_id for f in load_manifest(store, "p1")[0].frames] == ["S2A_A"]
    assert not store.exists("p1/frames/holder.tif")  # not even its data objects were written
    assert not store.exists(keys.lock("p1"))


def test_run_that_lost_its_lease_stops_between_stages(tmp_path):
    """The runner checks the lease before each stage: taken over after ingest, the run tracks nothing."""
    from scarmon.demo.synthetic import demo_site, generate_catalog
    from scarmon.ingest.discovery import open_catalog
    from scarmon.service.runner import run_stages
    from scarmon.site import load_site

    f = tmp_path / "l1.yaml"
    f.write_text(yaml.safe_dump(json.loads(json.dumps({**demo_site("creep-failure"), "id": "l1"}, default=str))))
    site = load_site(f)
    items = generate_catalog(tmp_path / "cat", demo_site("creep-failure"), start="2021-06-01", end="2021-06-15")
    store = LocalStore(tmp_path / "store")
    seen: list[str] = []

    def stage(name, fn):
        seen.append(name)
        out = fn()
        if name == "ingest":  # another run takes the lease over (as after an expiry judged by a skewed clock)
            store.put(keys.lock("l1"), json.dumps({"owner": "thief", "since": "2026-01-01T00:00:00+00:00"}).encode())
            lease = held_lease(store, "l1")
            assert lease is not None
            lease.renew()  # what the next heartbeat does
        return out

    with pytest.raises(LeaseLost, match="taken over by thief"):
        run_stages(site, store, open_catalog(str(items)), ["ingest", "track", "alert", "publish"], run_stage=stage)
    assert seen == ["ingest"]
    manifest = load_manifest(store, "l1")[0]
    assert manifest.frames and manifest.tracked_until is None and not store.list("l1/masks/")
    assert lease_doc(store, "l1")["owner"] == "thief"  # the losing run did not delete the new lease
