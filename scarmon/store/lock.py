"""One run per site at a time: a lock object in the store, taken with a create-only conditional put.

Works the same on a local folder (flock-guarded put_if) and on S3 (If-None-Match: *), so it also holds between
machines sharing an S3 store. A lock older than its TTL is taken over (the run that held it crashed).
"""

from __future__ import annotations

from scarmon.errors import ScarmonError
import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Iterator

from scarmon.store import keys
from scarmon import defaults
from scarmon.store.backends import Conflict, KeyMissing, Store


class SiteBusy(ScarmonError):
    """Another run holds the site's lock."""


@contextlib.contextmanager
def site_lock(store: Store, site_id: str, *, ttl_s: float = defaults.LOCK_TTL_S, owner: str | None = None) -> Iterator[str]:
    """Hold the site's lock for the `with` body; raise SiteBusy if another live run holds it."""
    token = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.timezone.utc)
    body = json.dumps({"owner": token, "since": now.isoformat(), "ttl_s": ttl_s}).encode()
    key = keys.lock(site_id)
    try:
        store.put_if(key, body, expected_tag=None, content_type="application/json")
    except Conflict:
        try:
            data, tag = store.get_with_tag(key)
            held = json.loads(data)
            age = (now - dt.datetime.fromisoformat(held["since"])).total_seconds()
        except KeyMissing:  # released meanwhile: try once more
            data, tag, held, age = b"", None, {}, float("inf")
        if age < float(held.get("ttl_s", ttl_s)):
            raise SiteBusy(f"site {site_id} is busy (run by {held.get('owner')} since {held.get('since')}, lock "
                           f"{store.url(key)}); try again later") from None
        try:
            store.put_if(key, body, expected_tag=tag, content_type="application/json")
        except Conflict:
            raise SiteBusy(f"site {site_id}: another run took the stale lock {key} first") from None
    try:
        yield token
    finally:
        with contextlib.suppress(Exception):
            if json.loads(store.get(key)).get("owner") == token:
                store.delete(key)
