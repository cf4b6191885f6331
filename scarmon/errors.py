"""The errors a user can act on, and which of them are worth retrying.

Every error scarmon raises for bad input or an unusable environment derives from `ScarmonError`: its message names
the file, key, scene or URL and says what to do, so the CLI and the flows print that one line, never a traceback.
`is_transient` is the one rule for retries: network failures, HTTP 429/5xx and lost store races are retried; bad
input (a site file, a corrupt document, a malformed catalog item) is never retried, because it fails the same way
every time.
"""

from __future__ import annotations

import socket


class ScarmonError(Exception):
    """An error for people: the message says what is wrong where, and what to do."""

    transient: bool = False
    """True when the same work may succeed if tried again later (network, 429/5xx, a lost store race)."""


def transient(exc: ScarmonError, flag: bool = True) -> ScarmonError:
    """Mark an error instance as transient (or not) and return it, for `raise transient(CatalogError(...))`."""
    exc.transient = flag
    return exc


_NETWORK = (ConnectionError, TimeoutError, socket.timeout)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the work that raised `exc` can help. Unknown errors are not retried: the next scheduled
    tick runs again anyway, and a deterministic failure retried with backoff only delays the report."""
    if isinstance(exc, ScarmonError):
        return exc.transient
    if isinstance(exc, _NETWORK):
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # requests is a core dependency; this only guards partial installs
        pass
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


__all__ = ["ScarmonError", "is_transient", "transient"]
