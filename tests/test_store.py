"""The store seam against a real folder and a real S3 API (moto server on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from scarmon.store.backends import Conflict, KeyMissing, LocalStore, S3Store, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_uri"))


def test_round_trip(store) -> None:
    tag = store.put("site-a/frames/x.bin", b"\x00\x01hello", content_type="application/octet-stream")
    assert store.get("site-a/frames/x.bin") == b"\x00\x01hello"
    data, tag2 = store.get_with_tag("site-a/frames/x.bin")
    assert (data, tag2) == (b"\x00\x01hello", tag)
    assert store.exists("site-a/frames/x.bin")
    assert not store.exists("site-a/frames")  # a "folder" is not an object
    tag3 = store.put("site-a/frames/x.bin", b"other")
    assert tag3 != tag and store.get("site-a/frames/x.bin") == b"other"
    assert store.put("empty", b"") and store.get("empty") == b""
    assert "site-a/frames/x.bin" in store.url("site-a/frames/x.bin")
    store.delete("site-a/frames/x.bin")
    assert not store.exists("site-a/frames/x.bin")
    store.delete("site-a/frames/x.bin")  # deleting a missing key is fine, as on S3


def test_local_path_and_url(tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "s"))
    local.put("a/b.tif", b"cog")
    assert local.local_path("a/b.tif") == tmp_path / "s" / "a" / "b.tif"
    assert local.local_path("a/b.tif").read_bytes() == b"cog"
    assert local.url("a/b.tif") == str(tmp_path / "s" / "a" / "b.tif")


def test_s3_url_and_content_type(s3_uri: str, moto_endpoint: str) -> None:
    s3 = open_store(s3_uri)
    assert isinstance(s3, S3Store) and s3.local_path("a") is None
    s3.put("a/m.json", b"{}", content_type="application/json")
    assert s3.url("a/m.json") == f"{moto_endpoint}/{s3.bucket}/store-root/a/m.json"
    head = s3._client.head_object(Bucket=s3.bucket, Key="store-root/a/m.json")
    assert head["ContentType"] == "application/json"


def test_key_missing(store) -> None:
    with pytest.raises(KeyMissing) as exc:
        store.get("nope/x.json")
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, StoreError)
    assert "nope/x.json" in str(exc.value) and store.uri in str(exc.value)
    with pytest.raises(KeyMissing):
        store.get_with_tag("nope/x.json")
    assert not store.exists("nope/x.json")


def test_put_if_create_only_conflict(store) -> None:
    tag = store.put_if("m.json", b"v1", expected_tag=None)
    with pytest.raises(Conflict) as exc:
        store.put_if("m.json", b"v2", expected_tag=None)
    assert "m.json" in str(exc.value)
    assert store.get_with_tag("m.json") == (b"v1", tag)


def test_put_if_stale_tag_conflict(store) -> None:
    t1 = store.put("m.json", b"v1")
    t2 = store.put_if("m.json", b"v2", expected_tag=t1)
    assert store.get_with_tag("m.json") == (b"v2", t2)
    with pytest.raises(Conflict) as exc:
        store.put_if("m.json", b"v3", expected_tag=t1)  # t1 is stale now
    if isinstance(store, S3Store):
        assert exc.value.__cause__.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert store.get("m.json") == b"v2"
    with pytest.raises(Conflict):
        store.put_if("gone.json", b"x", expected_tag=t2)  # expected a version, there is none
    assert not store.exists("gone.json")


def test_put_if_is_a_compare_and_swap_under_contention(store) -> None:
    """4 threads x 8 increments of one counter via get_with_tag + put_if: no increment may be lost."""
    store.put("counter", b"0")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            done = 0
            while done < 8:
                data, tag = store.get_with_tag("counter")
                try:
                    store.put_if("counter", str(int(data) + 1).encode(), expected_tag=tag)
                    done += 1
                except Conflict:
                    time.sleep(0.001)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert store.get("counter") == b"32"


def test_list_with_prefix(store) -> None:
    for key in ("a/1", "a/2/x", "ab/3", "b/x", "top"):
        store.put(key, key.encode())
    assert store.list() == ["a/1", "a/2/x", "ab/3", "b/x", "top"]
    assert store.list("a/") == ["a/1", "a/2/x"]
    assert store.list("a") == ["a/1", "a/2/x", "ab/3"]
    assert store.list("a/2/") == ["a/2/x"]
    assert store.list("zzz/") == []
    assert store.list("b/x") == ["b/x"]


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "..", "a\\b", "a//b", "a/", "./a", ".scarmon-locks/x"])
def test_bad_keys_rejected(store, key: str) -> None:
    for call in (
        lambda: store.get(key),
        lambda: store.put(key, b"x"),
        lambda: store.exists(key),
        lambda: store.put_if(key, b"x", expected_tag=None),
        lambda: store.delete(key),
    ):
        with pytest.raises(StoreError) as exc:
            call()
        assert not isinstance(exc.value, KeyMissing)
        assert repr(key) in str(exc.value)
    if isinstance(store, LocalStore):
        assert not any(p.name == "x" for p in store.root.rglob("*"))


def test_open_store_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = open_store(str(tmp_path / "new" / "folder"))
    assert isinstance(plain, LocalStore) and (tmp_path / "new" / "folder").is_dir()
    via_uri = open_store((tmp_path / "u").as_uri())
    assert isinstance(via_uri, LocalStore) and via_uri.root == tmp_path / "u"
    assert via_uri.uri == (tmp_path / "u").as_uri()
    with pytest.raises(StoreError, match="unsupported store URI scheme"):
        open_store("gs://bucket/x")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///x")
    # Endpoint precedence: argument > SCARMON_S3_ENDPOINT_URL > AWS_ENDPOINT_URL > AWS default.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("SCARMON_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3 = open_store("s3://bkt/some/prefix/")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.endpoint_url) == ("bkt", "some/prefix/", None)
    assert s3.uri == "s3://bkt/some/prefix/" and s3.url("k") == "s3://bkt/some/prefix/k"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert open_store("s3://bkt").endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("SCARMON_S3_ENDPOINT_URL", "http://127.0.0.1:2")
    assert open_store("s3://bkt").endpoint_url == "http://127.0.0.1:2"
    assert open_store("s3://bkt", endpoint_url="http://127.0.0.1:3").endpoint_url == "http://127.0.0.1:3"


def test_s3_missing_bucket_is_a_store_error_not_key_missing(s3_env, moto_endpoint: str) -> None:
    s3 = open_store("s3://scarmon-no-such-bucket/p")
    with pytest.raises(StoreError) as exc:
        s3.get("k")
    assert not isinstance(exc.value, KeyMissing)
    assert "NoSuchBucket" in str(exc.value) and "scarmon-no-such-bucket" in str(exc.value)
    with pytest.raises(StoreError, match="NoSuchBucket"):
        s3.list()


# --- local atomicity --------------------------------------------------------------------------------------------


def test_local_reader_never_sees_partial_content(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a, b = b"a" * (2 << 20), b"b" * (3 << 20)
    store.put("k", a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def writer() -> None:
        while not stop.is_set():
            store.put("k", b)
            store.put("k", a)

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while time.monotonic() < deadline:
            data = store.get("k")
            assert data in (a, b), f"partial read of {len(data)} bytes"
            seen.add(data[:1])
            reads += 1
    finally:
        stop.set()
        t.join()
    assert reads > 5


def test_local_failed_write_keeps_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "s")
    store.put("d/k", b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="d/k"):
        store.put("d/k", b"new")
    monkeypatch.undo()
    assert store.get("d/k") == b"old"
    assert [p.name for p in (tmp_path / "s" / "d").iterdir()] == ["k"]


_KILL_MID_PUT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from scarmon.store.backends import LocalStore
    store = LocalStore(sys.argv[1])
    real_fsync = os.fsync
    def slow_fsync(fd):
        Path(sys.argv[2]).write_text("writing")   # the temp file is written, not yet renamed
        time.sleep(60)
    os.fsync = slow_fsync
    store.put("d/k", b"new" * 100000)
""")


def test_local_put_killed_mid_write_leaves_old_content(tmp_path: Path) -> None:
    root, ready = tmp_path / "s", tmp_path / "ready"
    store = LocalStore(root)
    store.put("d/k", b"old")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_MID_PUT, str(root), str(ready)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, "child exited early"
            assert time.monotonic() < deadline, "child never reached the write"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    temps = [p for p in (root / "d").iterdir() if p.name != "k"]
    assert temps and all(p.name.startswith(".scarmon-tmp-") for p in temps)  # the crash left a temp file...
    assert store.get("d/k") == b"old"  # ...the object is intact...
    assert store.list() == ["d/k"] and store.list("d/") == ["d/k"]  # ...and the temp is not listed
    store.put("d/k", b"after")  # the stale lock (the child died holding it) does not block
    assert store.get("d/k") == b"after"
