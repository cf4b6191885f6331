"""Shared documents: the one read–change–conditional-write loop of scarmon, and its one policy for corrupt documents.

Several runs (sites in parallel, a refinement while a tick runs elsewhere) change the same small JSON documents: a
site's manifest and corrections, the alert history, `sites.json`, the root `catalog.json`. Every such change goes
through `update_document`: read the document and its tag, apply a pure `change`, write it back with a conditional
put; on a conflict (another run wrote first) back off with jitter, re-read and re-apply, up to `max_attempts`.

A document that exists but cannot be parsed is refused with `CorruptDocument`, which names the object and what to
do. It is never replaced by a fresh one: that would silently drop what other sites or runs stored in it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from scarmon import defaults
from scarmon.store.backends import Conflict, KeyMissing, Store, StoreError

T = TypeVar("T")
log = logging.getLogger(__name__)


class CorruptDocument(StoreError):
    """A stored document exists but cannot be read; the message names it and what to do."""


class StillConflicting(Conflict):
    """Other runs kept writing a document; the change was not applied (a transient condition: run again)."""


def read_document(store: Store, key: str, parse: Callable[[bytes], T], *, what: str) -> tuple[T | None, str | None]:
    """The parsed document and its tag, or (None, None) when there is none. `parse` raises ValueError (or
    KeyError/TypeError) on bad content, which becomes CorruptDocument naming the object."""
    try:
        data, tag = store.get_with_tag(key)
    except KeyMissing:
        return None, None
    try:
        return parse(data), tag
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptDocument(
            f"{store.url(key)} is not a valid {what} ({exc}); scarmon will not overwrite it. Restore it from a "
            "backup or a versioned bucket, or move it away to start it afresh"
        ) from None


def backoff(attempt: int) -> None:
    """Jittered, growing sleep so overlapping runs stop colliding on the same document."""
    time.sleep(random.uniform(0, min(defaults.STORE_BACKOFF_MAX_S, defaults.STORE_BACKOFF_BASE_S * 2**attempt)))


def update_document(
    store: Store,
    key: str,
    change: Callable[[T | None], T | None],
    *,
    parse: Callable[[bytes], T],
    dump: Callable[[T], bytes],
    what: str,
    content_type: str = "application/json",
    max_attempts: int = defaults.STORE_UPDATE_ATTEMPTS,
) -> T | None:
    """Read `key` (None when absent), apply `change`, write the result if it is not None, conditionally.

    Returns the document as stored afterwards (the current one when `change` returned None: nothing to write).
    `change` must be pure (it may run several times). Raises CorruptDocument for an unreadable document and
    StillConflicting when other runs kept winning the write.
    """
    current: T | None = None
    for attempt in range(max_attempts):
        current, tag = read_document(store, key, parse, what=what)
        new = change(current)
        if new is None:
            return current
        try:
            store.put_if(key, dump(new), expected_tag=tag, content_type=content_type)
            return new
        except Conflict:
            log.info("%s: another run wrote it first (attempt %d/%d); re-reading", key, attempt + 1, max_attempts)
            if attempt + 1 < max_attempts:
                backoff(attempt)
    raise StillConflicting(
        f"could not update {store.url(key)} after {max_attempts} attempts: other runs kept writing it; run again"
    )


__all__ = ["CorruptDocument", "StillConflicting", "backoff", "read_document", "update_document"]
