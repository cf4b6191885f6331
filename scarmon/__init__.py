"""scarmon: watch landslide scars in Sentinel-2 imagery and warn when they grow.

The public face of the library; the modules behind it are the implementation. Names are imported on first use so
that `import scarmon` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Site": "scarmon.site", "load_site": "scarmon.site", "SiteError": "scarmon.site",
    "SiteGrid": "scarmon.grid", "site_grid": "scarmon.grid",
    "open_catalog": "scarmon.discovery", "CatalogError": "scarmon.discovery",
    "open_store": "scarmon.store", "StoreError": "scarmon.store",
    "load_manifest": "scarmon.sequence",
    "track_site": "scarmon.track",
    "make_tracker": "scarmon.tracking.trackers",
    "add_corrections": "scarmon.corrections", "undo_correction": "scarmon.corrections",
    "evaluate_site": "scarmon.evaluate",
    "publish_site": "scarmon.products",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scarmon' has no attribute {name!r}")
