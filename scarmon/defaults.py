"""Every tunable default of scarmon in one place, each with the reason it has this value.

Site files may override the per-site ones; the rest are settings of the service.
"""

from __future__ import annotations

from typing import Literal

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

BOUNDARY_GROW_PX = 6
"""How far (pixels of the site grid, 12 m at 2 m) the scar boundary may grow into mid-NDVI pixels per frame: the
bilinear 10 m → 2 m edge band is ~5 px wide; farther growth must come from a low-NDVI core (a failure)."""

MAX_WEAK_RAISE = 0.35
"""Cap on how far the boundary (hysteresis) threshold may sit above the scar threshold: a half-scar, half-canopy
pixel in August has NDVI ≈ 0.4."""

MIN_SCAR_CONTRAST = 0.1
"""The scar must be at least this much lower in NDVI than the ground around it for its boundary band to be grown;
a revegetated scar (contrast gone) then falls back to the plain threshold and drops out."""

SEASONAL_GREEN_NDVI = 0.3
"""A pixel at or above this on a growing-season frame is green (vegetation, a herb-covered rim at ~0.45, leafed
forest); the scar with summer regrowth stays near 0.13. In the dormant season the scar may not grow onto it."""

SEASONAL_CREEP_PX = 4
"""In the dormant season the scar may still grow onto ground seen green in a band up to 4 px (8 m) wide along its
edge (creep between frames); wider low ground (a bare rim, leafless forest) is held. 8 px lets 30 m rims creep in."""

GUARD_NEAR_UNSEEN_PX = 15
"""New scar area within 15 px (30 m at 2 m) of cloud, shadow or snow that SCL flagged on the frame is held: SCL's
misses (thin cloud edges, partial snow below the snow line) lie next to what it flags, as low in NDVI as soil."""

GUARD_RECENT_FRAMES = 3
"""New scar area where any of the last 3 frames saw cloud or snow is held: melting snow and a moving snow line leave
wet, dark, partly snowy ground that SCL calls clear."""

GUARD_JUMP_PX = 4
"""New area farther than 4 px (8 m) from the previous mask is a jump: creep moves the edge by < 1 px per frame and
the boundary band wobbles by 2-3 px; a failure or a missed cloud moves it by tens. A jump waits for a second frame."""

GUARD_JUMP_MIN_PX = 50
"""Jumps smaller than 50 px (200 m² at 2 m) are taken at once: too small to matter for alerts, and held they would
only add lag."""

GUARD_COMPACT_CONTACT = 1.5
"""A jump whose contact with the scar (pixels) is at least 1.5 x sqrt(its area) is compact with the edge and taken at
once: a failure lobe or a growth band along the edge scores 2-7, a blob touching the scar (missed cumulus) under 1.2."""

GUARD_FLAG_PCT = 5.0
"""A frame is flagged low-confidence when the guard held at least 5 % of the scar's area (and GUARD_JUMP_MIN_PX): less
moves the area by no more than the boundary's own wobble; it is still held, just not flagged."""

KEEP_RECENT_STATES = 8
"""Tracking states kept for the newest frames (SAM 2's memory reaches 7 frames back): corrections usually land there."""

STATE_EVERY = 10
"""Older frames keep a tracking state every 10 frames, so a correction far back re-tracks at most 9 extra frames."""

SAM2_WINDOW_CPU = 8
"""Frames per SAM 2 call on CPU: bounds the preprocessed frames held in memory (results do not depend on it)."""

SAM2_WINDOW_GPU = 32
"""Frames per SAM 2 call on a GPU: fewer calls and state exports per tick, still a few hundred MB at 1024."""

LOW_CONFIDENCE_CLEAR = 0.9
"""A frame with fewer clear AOI pixels than this leans on the previous mask under clouds: flag it."""

SCAR_MARGIN_PX = 10
"""The scar's surroundings (pixels, 20 m at 2 m) count in its clear share: growth shows there first."""

LOW_CONFIDENCE_JUMP = 0.25
"""An area change above 25 % against both neighbours, in the same direction, is a spike or dip the next frame
undoes (missed cloud shadow, snow): flag it; true failures persist and are not flagged."""

RESOLUTION_M = 2.0
"""Frames are resampled bilinearly from 10 m to 1–2 m as in the paper; 2 m keeps a 3×3 km site at 1500² pixels."""

BRIGHT_RED_MIN = 0.30
"""Spectral validity test at ingestion: a clear-per-SCL pixel whose red (B04) surface reflectance reaches 0.30 and
whose NIR/red ratio is at most BRIGHT_MAX_NIR_RED is cloud or snow SCL missed (thin or missed cloud parts, partial
snow below a snow line), not ground, and becomes 'not observed'. Bare soil and rock are 0.05-0.30 in red (mostly
0.15-0.25), vegetation < 0.1; cloud is 0.3-0.8, snow 0.6-0.95 (Sen2Cor's own first cloud test ramps on red
brightness, 0.07-0.25 TOA, and needs other bands to spare bright soil: with red and NIR only, 0.30 is kept above
soil). Sites whose scar is bright rock or sand (red up to 0.3-0.4) raise `bright_red_min` in their site file, or set
it to null to turn the test off."""

BRIGHT_MAX_NIR_RED = 1.3
"""The bright test's ratio bound: cloud has NIR/red 0.9-1.2 and snow below 1, soil and rock 1.1-1.6, vegetation above
2. A bright pixel with a steeper red edge than 1.3 (NDVI 0.13) is ground, kept observed whatever its brightness."""

BRIGHT_WARN_FRACTION = 0.05
"""Ingestion logs a warning when the bright test masks at least 5 % of the AOI's SCL-clear pixels on a frame where
SCL saw no snow in the warm half of the year (May-October in the north, November-April in the south): missed cloud
is usually less, and a bright scar wrongly masked hides its growth (a missed alert), so the log names the setting."""

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

READ_CONCURRENCY = 8
"""Scenes read and decoded at once (one COG request each in flight): hides 20-100 ms request latency, and stays
polite to public blob stores, which throttle (429/503) well above this; GDAL and numpy release the GIL."""

RETRY_PENDING_DAYS = 30
"""A scene rejected for a state that may pass (assets not published yet, the pass's other tile not there yet) is
retried while it is less than this many days older than the newest scene: catalogs complete a pass within days."""

RETRY_MAX_ATTEMPTS = 5
"""A scene whose assets could not be read (network, corrupt file) is retried on at most this many runs, then
recorded as rejected with the last error: a file still broken after five ticks is broken."""

DEEP_RESCAN_DAYS = 30
"""Every this many days (per site, on a day fixed by its id) a run searches the site's whole history, not only the
LATE_PUBLICATION_DAYS reach-back: reprocessed and late scenes reach catalogs 17-645 days after acquisition."""

SIGN_GIVE_UP_S = 60.0
"""Total time one run keeps retrying asset URL signing (Planetary Computer SAS) before it skips the remaining
scenes of the run as pending: an unreachable signer must not stall each scene for minutes."""

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

SCL_SNOW = 11
"""11 snow or ice (the spectral test's warning is only for frames where SCL saw none)."""

# --- Site validation -----------------------------------------------------------------------------------------------

MAX_AOI_KM2 = 100.0
"""A site is one landslide; beyond 100 km² the 1–2 m frames no longer fit in memory for video tracking."""

# --- Alerts (overridable per site file under `alerts:`) ------------------------------------------------------------

ALERT_LEVELS = {"watch": (25.0, 1_000.0), "warning": (50.0, 5_000.0), "alarm": (100.0, 20_000.0)}
"""(relative %, absolute m²) growth over the baseline that a level needs, BOTH at once. Seasonal swings of the NDVI
scar area reach tens of percent (paper Figs. 8, 14) but the baseline absorbs most of them. Growth the site's noise
makes significant (ALERT_DETECT_SIGMA, the CUSUM) is a watch from ALERT_MIN_GROWTH_PCT on, even under 25 %; 25 % is
what re-alerting over an acknowledged level needs. The absolute part keeps a small scar's few-pixel wobble (+30 % of
2 000 m² is 150 pixels at 2 m) from alarming. Baige's failures (×1.6 then ×1.6 again) reach warning then alarm;
Sela's +330 % reaches alarm."""

ALERT_SEASON_WINDOW_DAYS = 45
"""Once the history reaches back a year, the baseline is the same season a year before: the median of the (up to 5)
confident frames nearest that day within ±45 days, each moved along the seasonal term to it: the same phenology, so
the summer regrowth dip does not look like change."""

ALERT_ROLLING_DAYS = 365
"""Before a site has a year of history, the baseline is the median deseasonalised log-area of the confident frames of
the last 365 days plus the seasonal term of the day (the median drops single odd frames; the seasonal term keeps
autumn's return to the winter level from looking like growth)."""

ALERT_WARMUP_DAYS = 20
"""No alert before the confident frames span 20 days (and ALERT_MIN_FRAMES frames): enough for a first level and
noise estimate. The seasonal model and the noise prior cover what a short history has not seen yet (docs/alerts.md);
a 300-day warm-up missed events in the first year and alerted finished growth late."""

ALERT_CONFIRM_COUNT = 2
"""Clear agreeing frames (the first detection included) a confirmation needs at least, whatever the evidence: one
frame, however strong, may be an overshoot (GLAD alerts ask 2 of 4)."""

ALERT_CONFIRM_WINDOW = 4
"""Clear frames after a provisional detection without confirmation (or 2 contradicting ones) reset it."""

ALERT_FINISH_AFTER = 2
"""A confirmed alert finishes after 2 consecutive clear observations without further growth beyond
ALERT_STABLE_PCT; the new area then becomes part of the baseline, so a later failure alerts again."""

ALERT_STABLE_PCT = 10.0
"""Growth below 10 % over the alert's previous clear observation counts as 'no further growth' (noise, regrowth)."""

ALERT_NOTIFY_ON: tuple[Literal["provisional", "confirmed", "escalated", "finished", "reset"], ...] = (
    "confirmed",
    "escalated",
)
"""Events sent to recipients; 'provisional' (first detection) and 'finished'/'reset' are kept in the history only,
so one odd frame never reaches anyone's inbox."""

ALERT_HISTORY_DAYS = 420
"""Confident frames kept in the alert state for baselines: one year plus the seasonal window, bounded."""

ALERT_MIN_FRAMES = 4
"""Confident frames needed before any alert: a level from fewer is one or two frames' noise."""

ALERT_NOISE_PRIOR = 0.05
"""Noise (robust sd of log-area) assumed until ALERT_NOISE_FRAMES frame pairs are measured, blended out as they come:
5 % is a cautious tracker error; most sites measure 1-3 %."""

ALERT_NOISE_FRAMES = 8
"""Successive confident frame pairs after which the site's measured noise replaces the prior."""

ALERT_NOISE_FLOOR = 0.015
"""Lowest noise a site is credited with (1.5 % of area): below it, sub-pixel boundary wobble and year-to-year
phenology differences that successive frames do not show still move the area."""

ALERT_DETECT_SIGMA = 4.0
"""A single frame is a detection when its log-area lies 4 noise sd above the baseline (and ALERT_MIN_GROWTH_PCT)."""

ALERT_AGREE_SIGMA = 2.0
"""A later frame agrees with an open detection when it lies 2 noise sd above the baseline; under 1 sd it contradicts."""

ALERT_STRONG_SIGMA = 8.0
"""A frame 8 noise sd over the baseline is full-strength evidence (weight 1); weaker agreeing frames weigh less,
down to 0.5."""

ALERT_CONFIRM_EVIDENCE = 1.75
"""Summed evidence weight of clear agreeing frames that confirms: two strong clean frames (a failure: the first clear
acquisition after it and the next), three to four weak or partly clouded ones."""

ALERT_CLEAN_QUALITY = 0.98
"""Clear share of the scar (or AOI) from which a frame's evidence counts in full; it weighs half at the
low-confidence limit (LOW_CONFIDENCE_CLEAR), linearly in between."""

ALERT_CUSUM_K = 1.0
"""CUSUM slack in noise sd per frame: a stable site's residuals (sd 1) drift back to zero; a +3 sd shift adds 2."""

ALERT_CUSUM_H = 6.0
"""CUSUM decision level: a sustained shift of a few sd is detected in 2-3 clear frames, white noise practically
never (average run length far beyond a decade of 5-day frames)."""

ALERT_CUSUM_CAP = 4.0
"""Per-frame residuals are capped at 4 sd before entering the CUSUM, so one odd frame cannot reach the decision level."""

ALERT_MIN_GROWTH_PCT = 8.0
"""Smallest growth over the baseline any rule reports, however quiet the site: below it, phenology and tracking
details dominate. Sustained +10-15 % is then seen long before the fixed +25 % watch threshold."""

ALERT_SEASON_PEAK_DOY = 200
"""Day of year of peak green (northern mountains: mid-July), when regrowth shrinks the NDVI scar most."""

ALERT_SEASON_AMPLITUDE = 0.15
"""Prior seasonal amplitude of log-area (±15 %) before the site's own frames measure it; estimated from the
site's successive frames as they come (shrunk towards the prior while they span little of the cycle)."""

ALERT_SEASON_AMPLITUDE_SD = 0.1
"""Prior uncertainty (sd) of the seasonal amplitude: while the frames have not pinned it down, a rolling baseline's
error from it (amplitude sd x how far the date's season lies from the history's) widens the noise a frame is scored
against, so the first autumn of a site monitored since summer is not alerted from leaf fall alone."""

ALERT_SEASON_AMPLITUDE_MAX = 0.45
"""Cap on the estimated seasonal amplitude of log-area: beyond ±45 % the model would explain away real growth."""

ALERT_SEASON_PRIOR_WEIGHT = 0.01
"""Weight of the amplitude prior, in units of summed squared seasonal change between frames (a few months of frames)."""

ALERT_STALE_DAYS = 40
"""A site without a confident frame for 40 days is blind (monsoon, snow): its status says so, and the first clear
frame after it is assessed against the level before the gap, with the elapsed time in the message."""

ALERT_GROUND_LAGS_DAYS = (90, 180, 270, 365)
"""The scar's footprint for new-ground measurement: union of the masks of the confident frames nearest to 90, 180,
270 and 365 days before a frame. Ground opened in the last three months is all 'new'; last year's dormant-season
extent is in the footprint, so the seasonal return of the scar is not."""

ALERT_GROUND_TOLERANCE_DAYS = 30
"""A footprint frame may lie up to 30 days from its lag."""

ALERT_GROUND_MARGIN_PX = 1
"""Footprint dilated by 1 pixel before counting new ground, so boundary flicker does not count."""

ALERT_GROUND_HIDDEN = 0.3
"""New ground alerts on its own (not through the total area) when the scar recently lost (over the quiet level of
its lost ground) at least 30 % as much ground elsewhere as it gained: revegetation hiding a new zone in the total.
Seasonal expansion and failures lose nothing, and are left to the area rules."""

SCHEDULE_CRON = "0 6 * * *"
"""Daily at 06:00 UTC: Sentinel-2 passes over the Jinsha valley around 04:20 UTC, and L2A products are usually
published within hours; a late-published scene is caught by the next ticks (LATE_PUBLICATION_DAYS)."""

# --- Notifications and monitoring service (environment, never site files) ------------------------------------------

SMTP_PORT = 25
"""Plain SMTP port; with SCARMON_SMTP_STARTTLS=1 the usual submission port is 587 (set SCARMON_SMTP_PORT)."""

SMTP_TIMEOUT_S = 30.0
"""An SMTP conversation longer than this fails; the message stays in the outbox for the next run."""

WEBHOOK_RETRIES = 3
"""Webhook POST retries on connection errors and 429/5xx with exponential backoff (0.5, 1, 2 s); after that the
delivery stays in the outbox and is retried on the next run."""

WEBHOOK_TIMEOUT_S = 15.0
"""One webhook POST may take at most this long."""

LOCK_TTL_S = 300
"""A site lease not renewed for this long is left by a crashed run and is taken over: short, because the heartbeat
(LOCK_HEARTBEAT_S) keeps a working run's lease alive however long it runs ($SCARMON_LOCK_TTL_S overrides)."""

LOCK_HEARTBEAT_S = 60
"""A working run renews its site lease this often: four missed beats before the lease expires."""

FANOUT_THREADS = 8
"""Sites one `monitor_all` runs at once on threads ($SCARMON_THREADS): reads wait on the network and GDAL/numpy
release the GIL, so a few per core keep it busy without one process holding hundreds of sites' arrays at once."""

TASK_RETRIES = 3
"""Network-bound flow tasks (catalog search, notification) retry this often, with backoff TASK_RETRY_DELAYS_S."""

TASK_RETRY_DELAYS_S = (10, 60, 300)
"""Backoff of network task retries: a short blip, a restarted service, a rate-limit window."""

# --- The store ------------------------------------------------------------------------------------------------------

STORE_UPDATE_ATTEMPTS = 10
"""Conditional writes of a shared document (manifest, corrections, alert history, sites.json, catalog.json) retried
this often when another run wrote first: sites in parallel touch the store-wide documents once per tick each."""

STORE_BACKOFF_BASE_S = 0.01
"""First backoff after a lost conditional write; doubles per attempt (jittered), so colliding runs spread out."""

STORE_BACKOFF_MAX_S = 0.5
"""Backoff cap: a lost write is settled within a few seconds even on S3 round trips."""

SITE_FILE_MAX_BYTES = 1_000_000
"""A site file is a few hundred bytes of YAML (an AOI of a few hundred vertices at most); a bigger file is a mistake
(a GeoTIFF or a log given as --site) and is refused before parsing."""
