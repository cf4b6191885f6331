"""One run per site at a time: a lease object in the store, renewed by a heartbeat while the run works.

The lease is `{site}/lock.json`, taken with a create-only conditional put and renewed with a conditional put on the
tag of the last renewal. That works the same on a local folder (flock-guarded put_if) and on S3 (If-None-Match: *,
If-Match), so it holds between machines sharing an S3 store.

* A run renews its lease every `heartbeat_s` (a daemon thread) and lets it expire `ttl_s` after the last renewal:
  a crashed holder (OOM kill, evicted pod) frees its site within minutes, a long backfill keeps it for hours.
* A holder that is provably gone is taken over at once: same host (hostname, PID namespace and boot), and its
  process no longer exists (or the pid now belongs to a younger process). A re-run right after `kill -9` works.
* A run that lost its lease (paused past it, its renewals failing, another run took it over) stops before its next
  write: `check_lease(store, site)` raises `LeaseLost`; the runner calls it before each stage and the sequence
  manifest before each data write and swap. The window left is the one between that check and the write itself.
* A busy site raises `SiteBusy`, naming the holder and when its lease expires.

Expiry is judged by the contender's wall clock against the holder's `renewed_at`; the holder stops trusting its lease
a margin earlier by its own monotonic clock, so clock skew between machines below that margin is harmless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scarmon import defaults
from scarmon.errors import ScarmonError
from scarmon.store import keys
from scarmon.store.backends import Conflict, KeyMissing, Store

log = logging.getLogger(__name__)


class SiteBusy(ScarmonError):
    """Another live run holds the site's lease."""


class LeaseLost(ScarmonError):
    """This run no longer holds its site's lease (it was paused past it, or another run took it over): it must not
    write anything more. Not transient: retrying in-process would write without a lease."""


def lease_ttl_s() -> float:
    """$SCARMON_LOCK_TTL_S, else defaults.LOCK_TTL_S."""
    return float(os.environ.get("SCARMON_LOCK_TTL_S") or defaults.LOCK_TTL_S)


def lease_heartbeat_s(ttl_s: float) -> float:
    """$SCARMON_LOCK_HEARTBEAT_S, else defaults.LOCK_HEARTBEAT_S, never more than a third of the TTL."""
    raw = os.environ.get("SCARMON_LOCK_HEARTBEAT_S")
    return min(float(raw) if raw else defaults.LOCK_HEARTBEAT_S, ttl_s / 3)


# --- who holds it: enough to prove, on the same host, that the holder is gone ----------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid from ours."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """The process holding a lease, as written into the lease document."""

    host: str
    pid: int
    pidns: str | None
    boot: str | None
    start: str | None

    @classmethod
    def me(cls) -> Holder:
        return cls(
            socket.gethostname(),
            os.getpid(),
            _pid_namespace(),
            _read("/proc/sys/kernel/random/boot_id"),
            _process_start(os.getpid()),
        )

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "pidns": self.pidns, "boot": self.boot, "start": self.start}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Holder | None:
        if not isinstance(d.get("host"), str) or not isinstance(d.get("pid"), int):
            return None  # an older lock document (owner string only): not provable, it waits for its TTL
        return cls(d["host"], d["pid"], d.get("pidns"), d.get("boot"), d.get("start"))

    def gone(self) -> bool:
        """True only when provably gone: on this host (same hostname, PID namespace and boot) and its process no
        longer exists, or its pid belongs to a process started at another time. Elsewhere: never provable."""
        me = Holder.me()
        if self.host != me.host or self.pidns != me.pidns:
            return False
        if self.boot and me.boot and self.boot != me.boot:
            return True  # rebooted since: every process of that boot is gone
        if not _pid_alive(self.pid):
            return True
        start = _process_start(self.pid)
        return bool(self.start and start and start != self.start)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _expires(held: dict[str, Any], ttl_s: float) -> dt.datetime:
    """When a lease document expires: its last renewal (or start) plus its own TTL."""
    last = held.get("renewed_at") or held.get("since")
    try:
        at = dt.datetime.fromisoformat(str(last))
        ttl = float(held.get("ttl_s", ttl_s))
    except (TypeError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.UTC)  # unreadable: expired
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at + dt.timedelta(seconds=ttl)


# --- the lease -------------------------------------------------------------------------------------------------------


class Lease:
    """A held site lease: renewed by `start_heartbeat`, checked by `check`, given back by `release`."""

    def __init__(
        self,
        store: Store,
        site_id: str,
        token: str,
        tag: str,
        *,
        ttl_s: float,
        heartbeat_s: float,
        since: str,
        acquired_at: float,
    ) -> None:
        self.store, self.site_id, self.token, self.key = store, site_id, token, keys.lock(site_id)
        self.ttl_s, self.heartbeat_s, self.since = ttl_s, heartbeat_s, since
        self.renewals = 0
        self._tag = tag
        self._valid_until = acquired_at + ttl_s - self.margin_s
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def margin_s(self) -> float:
        """How much earlier than a contender would, this run stops trusting its lease (skew and one store call)."""
        return min(self.heartbeat_s, self.ttl_s / 4)

    def body(self, renewed_at: dt.datetime) -> bytes:
        return json.dumps(
            {
                "owner": self.token,
                **Holder.me().to_json(),
                "since": self.since,
                "renewed_at": renewed_at.isoformat(),
                "ttl_s": self.ttl_s,
                "expires_at": (renewed_at + dt.timedelta(seconds=self.ttl_s)).isoformat(),
                "renewals": self.renewals,
            }
        ).encode()

    def renew(self) -> bool:
        """One renewal; False once the lease is lost. A failed store call leaves the lease as it was (the next
        heartbeat tries again; `check` gives up when it has expired by the local clock)."""
        with self._mutex:
            if self._lost:
                return False
            started = time.monotonic()
            if started > self._valid_until:
                self._lose("its lease expired before it could be renewed (the run was paused or the store unreachable)")
                return False
            self.renewals += 1
            try:
                self._tag = self.store.put_if(
                    self.key, self.body(_now()), expected_tag=self._tag, content_type="application/json"
                )
            except Conflict:
                self._lose(self._why_conflict())
                return False
            except Exception as exc:  # noqa: BLE001 - a store hiccup: keep the lease, retry at the next beat
                self.renewals -= 1
                log.warning("site %s: could not renew its lease (%s); retrying", self.site_id, exc)
                return True
            self._valid_until = started + self.ttl_s - self.margin_s
            return True

    def _why_conflict(self) -> str:
        try:
            held = json.loads(self.store.get(self.key))
        except KeyMissing:
            return "its lease was removed from the store"
        except Exception as exc:  # noqa: BLE001 - the reason is only for the message
            return f"its lease changed in the store ({exc})"
        return f"its lease was taken over by {held.get('owner')} at {held.get('since')}"

    def _lose(self, why: str) -> None:
        if not self._lost:
            self._lost = why
            log.error("site %s: %s; this run stops before its next write", self.site_id, why)

    @property
    def lost(self) -> str | None:
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost if this run may no longer write: the lease was lost, or it expired by the local clock
        since the last renewal (a contender may be taking it over right now)."""
        with self._mutex:
            if not self._lost and time.monotonic() > self._valid_until:
                self._lose(
                    "its lease expired since its last renewal (the run was paused, or the store was "
                    "unreachable for longer than the lease)"
                )
        if self._lost:
            raise LeaseLost(
                f"site {self.site_id}: {self._lost} ({self.store.url(self.key)}); nothing more was "
                "written, the next run continues from what is stored"
            )

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                if not self.renew():
                    return

        self._thread = threading.Thread(target=beat, name=f"lease-{self.site_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing; delete the lease document if it is still ours (unchanged since our last renewal)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex, contextlib.suppress(Exception):
            if self._lost:
                return
            _, tag = self.store.get_with_tag(self.key)
            if tag == self._tag:
                self.store.delete(self.key)


def acquire(
    store: Store,
    site_id: str,
    *,
    ttl_s: float | None = None,
    heartbeat_s: float | None = None,
    owner: str | None = None,
) -> Lease:
    """Take the site's lease (no heartbeat yet) or raise SiteBusy. An expired lease, or one whose holder is
    provably gone, is taken over with a conditional put on its tag (two contenders: one wins)."""
    ttl = float(ttl_s if ttl_s is not None else lease_ttl_s())
    beat = float(heartbeat_s if heartbeat_s is not None else lease_heartbeat_s(ttl))
    token = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    key = keys.lock(site_id)
    started, now = time.monotonic(), _now()
    lease = Lease(store, site_id, token, "", ttl_s=ttl, heartbeat_s=beat, since=now.isoformat(), acquired_at=started)
    body = lease.body(now)
    try:
        lease._tag = store.put_if(key, body, expected_tag=None, content_type="application/json")
        return lease
    except Conflict:
        pass
    try:
        data, tag = store.get_with_tag(key)
    except KeyMissing:  # released meanwhile: one more create-only try
        try:
            lease._tag = store.put_if(key, body, expected_tag=None, content_type="application/json")
            return lease
        except Conflict:
            raise SiteBusy(
                f"site {site_id}: another run took the lease {store.url(key)} first; try again later"
            ) from None
    try:
        held: dict[str, Any] = json.loads(data)
        if not isinstance(held, dict):
            raise ValueError("not an object")
    except ValueError:
        held = {}  # an unreadable lease protects nothing: take it over
    holder = Holder.from_json(held)
    expires = _expires(held, ttl)
    if holder is not None and holder.gone():
        why = f"its holder {held.get('owner')} is gone (no process {holder.pid} on {holder.host})"
    elif now >= expires:
        why = f"it expired at {expires.isoformat(timespec='seconds')}"
    else:
        raise SiteBusy(
            f"site {site_id} is busy (run by {held.get('owner')} since {held.get('since')}, lease "
            f"{store.url(key)} renewed until {expires.isoformat(timespec='seconds')}); try again later"
        )
    try:
        lease._tag = store.put_if(key, body, expected_tag=tag, content_type="application/json")
    except Conflict:
        raise SiteBusy(f"site {site_id}: another run took over the lease {store.url(key)} first") from None
    log.warning("site %s: took over the lease %s: %s", site_id, store.url(key), why)
    return lease


# --- the leases this process holds, for checks deep inside a run ------------------------------------------------

_held: dict[tuple[str, str], Lease] = {}
_held_mutex = threading.Lock()


def held_lease(store: Store, site_id: str) -> Lease | None:
    """The lease this process holds on the site in `store`, if any."""
    with _held_mutex:
        return _held.get((store.uri, site_id))


def check_lease(store: Store, site_id: str) -> None:
    """Before a write: raise LeaseLost if this process held the site's lease and lost it. A no-op when this process
    holds no lease on the site (tools and tests that write without the runner)."""
    lease = held_lease(store, site_id)
    if lease is not None:
        lease.check()


@contextlib.contextmanager
def site_lock(
    store: Store,
    site_id: str,
    *,
    ttl_s: float | None = None,
    heartbeat_s: float | None = None,
    owner: str | None = None,
) -> Iterator[str]:
    """Hold the site's lease for the `with` body, renewed by a heartbeat; yields its token. Raises SiteBusy if
    another live run holds it; `check_lease` raises LeaseLost inside the body once the lease is lost."""
    lease = acquire(store, site_id, ttl_s=ttl_s, heartbeat_s=heartbeat_s, owner=owner)
    slot = (store.uri, site_id)
    with _held_mutex:
        _held[slot] = lease
    lease.start_heartbeat()
    try:
        yield lease.token
    finally:
        with _held_mutex:
            if _held.get(slot) is lease:
                del _held[slot]
        lease.release()


__all__ = [
    "Holder",
    "Lease",
    "LeaseLost",
    "SiteBusy",
    "acquire",
    "check_lease",
    "held_lease",
    "lease_heartbeat_s",
    "lease_ttl_s",
    "site_lock",
]
