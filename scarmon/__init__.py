"""scarmon: watch landslide scars in Sentinel-2 imagery and warn when they grow.

The public face of the library; the modules behind it are the implementation. Names are imported on first use so
that `import scarmon` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Site": "scarmon.site",
    "load_site": "scarmon.site",
    "SiteError": "scarmon.site",
    "SiteGrid": "scarmon.grid",
    "site_grid": "scarmon.grid",
    "open_catalog": "scarmon.ingest.discovery",
    "CatalogError": "scarmon.ingest.discovery",
    "open_store": "scarmon.store.backends",
    "StoreError": "scarmon.store.backends",
    "load_manifest": "scarmon.store.sequence",
    "track_site": "scarmon.tracking.pipeline",
    "make_tracker": "scarmon.tracking.trackers",
    "add_corrections": "scarmon.tracking.corrections",
    "undo_correction": "scarmon.tracking.corrections",
    "evaluate_site": "scarmon.tracking.evaluate",
    "publish_site": "scarmon.products.publish",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scarmon' has no attribute {name!r}")
