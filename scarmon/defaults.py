"""Every tunable default of scarmon in one place, each with the reason it has this value.

Site files may override the per-site ones; the rest are settings of the service.
"""

from __future__ import annotations

# --- Site defaults (overridable per site file) -------------------------------------------------------------------

NDVI_THRESHOLD = 0.1
"""Scar pixels have NDVI at or below this (Zhou, Mei et al. 2025: bare scar ≈ 0.1 in the dry season)."""

LUSH_SEASON_THRESHOLD_RAISE = 0.05
"""The paper raises the threshold slightly in lush seasons, when regrowth on the scar lifts its NDVI."""

LUSH_BACKGROUND_NDVI = 0.5
"""A frame is 'lush' when the median NDVI of the ground around the scar reaches this (summer canopy on the Jinsha
slopes ≈ 0.6–0.7, dormant ≈ 0.3–0.4); then sparse regrowth lifts the scar's NDVI and the threshold is raised."""

WATER_NDVI_MAX = 0.0
"""Water has NDVI below 0; bare rock and soil rarely do. Excluding it keeps a river the scar reaches (Baige dammed
the Jinsha twice) out of the scar."""

MIN_MEMORY_OVERLAP = 0.1
"""A low-NDVI component continues the scar when at least this share of it was scar in the previous frame: a ×5
failure still qualifies, an unrelated bare patch touching the scar's edge by a few pixels does not."""

OPEN_RADIUS_PX = 1
"""Morphological opening radius (pixels) that removes isolated low-NDVI speckle (noise, single dark pixels)."""

LOW_CONFIDENCE_CLEAR = 0.9
"""A frame with fewer clear AOI pixels than this leans on the previous mask under clouds: flag it."""

LOW_CONFIDENCE_JUMP = 0.25
"""An area change above 25 % against both neighbours, in the same direction, is a spike or dip the next frame
undoes (missed cloud shadow, snow): flag it; true failures persist and are not flagged."""

RESOLUTION_M = 2.0
"""Frames are resampled bilinearly from 10 m to 1–2 m as in the paper; 2 m keeps a 3×3 km site at 1500² pixels."""

MAX_CLOUD_FRACTION = 0.2
"""Reject a scene when more than this share of the covered AOI is cloud, shadow, cirrus or snow: beyond it the
scar outline is too fragmented for tracking to trust."""

MIN_COVERAGE = 0.9
"""Reject a scene whose data cover less than this share of the AOI (tile edges, orbit swath edges)."""

START_DATE = "2017-01-01"
"""Sentinel-2 L2A archives on Planetary Computer start in practice at the end of 2016."""

# --- Discovery -----------------------------------------------------------------------------------------------------

CATALOG = "https://planetarycomputer.microsoft.com/api/stac/v1"
"""Planetary Computer hosts the full Sentinel-2 L2A archive as COGs, free, with signed blob URLs."""

COLLECTION = "sentinel-2-l2a"
"""The Planetary Computer collection id; Earth Search's reprocessed collection is ``sentinel-2-c1-l2a``."""

KNOWN_COLLECTIONS = {"earth-search.aws.element84.com": "sentinel-2-c1-l2a"}
"""Catalog hosts whose Sentinel-2 L2A collection is not named like Planetary Computer's."""

SCENE_CLOUD_PREFILTER = 95.0
"""`eo:cloud_cover` is for the whole 110 km tile, so it only prefilters loosely: a tile 90 % cloudy can still be
clear over a 3 km site. Only almost fully clouded tiles are dropped before reading SCL over the AOI."""

LATE_PUBLICATION_DAYS = 45
"""Search this far back before the cursor: a scene acquired earlier may be published (or reprocessed) late, and
must still be found; scenes already stored are skipped by id."""

PAGE_SIZE = 100
"""Items per STAC API page: large enough for few round trips, small enough for a 5xx to cost little."""

HTTP_RETRIES = 5
"""Retries for 429/5xx/timeouts against STAC APIs, with exponential backoff."""

HTTP_BACKOFF_S = 1.0
"""First backoff step; doubles per retry (1, 2, 4, 8, 16 s), under Planetary Computer's rate-limit windows."""

HTTP_TIMEOUT_S = 60.0
"""A STAC search page that takes longer than this is treated as a failed attempt and retried."""

# --- Radiometry and frames ----------------------------------------------------------------------------------------

L2A_SCALE = 1e-4
"""Sentinel-2 L2A DN to surface reflectance."""

BASELINE_OFFSET_FROM = "04.00"
"""From processing baseline 04.00 (2022-01-25, and reprocessed older scenes) L2A DN carry +1000
(BOA_ADD_OFFSET). Keyed on the baseline, not the date (PlanetaryComputer issue 134)."""

BASELINE_OFFSET_DN = -1000
"""The BOA_ADD_OFFSET to undo for baselines ≥ 04.00 when the item carries no raster:bands offset."""

VIDEO_NDVI_RANGE = (-0.2, 0.8)
"""Fixed NDVI → gray mapping of video frames (never per-frame min–max, which would make a uniform seasonal
green-up look like a change of the scar). Scars (≈0.1) fall mid-dark, vegetation (0.3–0.8) bright."""

SCREEN_RESOLUTION_M = 20.0
"""SCL is a 20 m product: screening on a 20 m version of the site grid reads SCL at its native resolution."""

# --- SCL classes (Sentinel-2 L2A scene classification) -------------------------------------------------------------

SCL_NO_DATA = frozenset({0, 1})
"""0 no data, 1 saturated/defective."""

SCL_NOT_CLEAR = frozenset({3, 8, 9, 10, 11})
"""3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus, 11 snow. Class 2 (terrain/dark area shadow)
is common on steep landslide slopes and is *not* cloud."""

# --- Site validation -----------------------------------------------------------------------------------------------

MAX_AOI_KM2 = 100.0
"""A site is one landslide; beyond 100 km² the 1–2 m frames no longer fit in memory for video tracking."""
