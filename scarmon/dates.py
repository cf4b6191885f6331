"""Dates and times as scarmon reads them: ISO 8601 to aware UTC datetimes, in one place (pure, no I/O).

Sentinel-2 acquisition times are UTC; a naive timestamp is taken as UTC, a 'Z' suffix is accepted on every Python.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def utc_datetime(value: str) -> dt.datetime:
    """An aware UTC datetime from an ISO 8601 string; ValueError (or TypeError) for anything else."""
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {value!r}")
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def optional_utc_datetime(value: Any) -> dt.datetime | None:
    """As `utc_datetime`, with None for a missing value (None or ""), as STAC properties may be."""
    return utc_datetime(str(value)) if value else None


__all__ = ["optional_utc_datetime", "utc_datetime"]
