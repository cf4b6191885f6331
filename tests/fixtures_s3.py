"""S3 on loopback for tests: one moto server per session, a fresh bucket per test. No boto3 mocks.

Imported into tests/conftest.py with `from tests.fixtures_s3 import *`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["moto_endpoint", "s3_env", "s3_bucket", "s3_uri", "S3_TEST_ENV"]

# Fake credentials; the endpoint is filled in per session. Exported so tests can hand them to subprocesses.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/scarmon-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/scarmon-test-aws-credentials",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class _Serialized:
    """WSGI wrapper handling one request at a time.

    moto checks If-Match/If-None-Match and then stores the object without a lock, so two concurrent conditional
    puts can both succeed on its threaded server. Real S3 decides them atomically; serializing requests makes moto
    behave like S3 here, so the overlapping-run tests test scarmon and not moto's race.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Materialize the body inside the lock so the request is fully handled before the next one starts.
            return list(self.app(environ, start_response))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a moto S3 server running for the whole test session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    inner = getattr(server, "_server", None)
    if inner is not None and hasattr(inner, "app"):
        inner.app = _Serialized(inner.app)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> dict[str, str]:
    """Fake credentials and SCARMON_S3_ENDPOINT_URL pointing at moto; returns the env it set."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    env = {**S3_TEST_ENV, "SCARMON_S3_ENDPOINT_URL": moto_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str], moto_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = f"scarmon-test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_uri(s3_bucket: str) -> str:
    """s3://BUCKET/prefix for a fresh bucket (with a prefix, so prefix handling is exercised too)."""
    return f"s3://{s3_bucket}/store-root"
