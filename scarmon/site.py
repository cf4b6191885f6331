"""Site files: what a user writes to have a landslide monitored.

A site file is YAML validated on load; a bad file gives one error that names the file, the key and the problem,
before anything is read or written.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from shapely.geometry import Point, Polygon, shape
from shapely.validation import explain_validity

from scarmon import defaults
from scarmon.errors import ScarmonError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SiteError(ScarmonError, ValueError):
    """A site file that cannot be used; the message names the file, the key and what to fix."""


class Prompt(BaseModel):
    """A point on the scar (label 1) or on stable ground (label 0), given on the frame of `date`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    label: Literal[0, 1]
    date: dt.date


class Level(BaseModel):
    """Growth over the baseline that a level needs: relative AND absolute, both at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pct: float = Field(gt=0, description="Growth over the baseline, percent.")
    m2: float = Field(ge=0, description="Growth over the baseline, square metres.")


def _level(name: str) -> Any:
    pct, m2 = defaults.ALERT_LEVELS[name]
    return Field(Level(pct=pct, m2=m2), description=f"Default {pct:g} % and {m2:g} m² over the baseline.")


class AlertRules(BaseModel):
    """When a site's scar growth raises an alert. Every key is optional; defaults are in scarmon/defaults.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    watch: Level = _level("watch")
    warning: Level = _level("warning")
    alarm: Level = _level("alarm")
    season_window_days: int = Field(defaults.ALERT_SEASON_WINDOW_DAYS, ge=1, le=182)
    rolling_days: int = Field(defaults.ALERT_ROLLING_DAYS, ge=10, le=730)
    warmup_days: int = Field(defaults.ALERT_WARMUP_DAYS, ge=0, le=1000)
    confirm_count: int = Field(defaults.ALERT_CONFIRM_COUNT, ge=1, le=10)
    confirm_window: int = Field(defaults.ALERT_CONFIRM_WINDOW, ge=1, le=20)
    finish_after: int = Field(defaults.ALERT_FINISH_AFTER, ge=1, le=20)
    stable_pct: float = Field(defaults.ALERT_STABLE_PCT, ge=0)
    notify_on: tuple[Literal["provisional", "confirmed", "escalated", "finished", "reset"], ...] = (
        defaults.ALERT_NOTIFY_ON
    )
    min_frames: int = Field(defaults.ALERT_MIN_FRAMES, ge=2, le=100)
    noise_prior: float = Field(defaults.ALERT_NOISE_PRIOR, gt=0, le=1)
    noise_floor: float = Field(defaults.ALERT_NOISE_FLOOR, gt=0, le=1)
    detect_sigma: float = Field(defaults.ALERT_DETECT_SIGMA, gt=0)
    agree_sigma: float = Field(defaults.ALERT_AGREE_SIGMA, gt=0)
    strong_sigma: float = Field(defaults.ALERT_STRONG_SIGMA, gt=0)
    confirm_evidence: float = Field(defaults.ALERT_CONFIRM_EVIDENCE, gt=0, le=20)
    cusum_k: float = Field(defaults.ALERT_CUSUM_K, ge=0)
    cusum_h: float = Field(defaults.ALERT_CUSUM_H, gt=0)
    min_growth_pct: float = Field(defaults.ALERT_MIN_GROWTH_PCT, ge=0)
    season_peak_doy: int = Field(
        defaults.ALERT_SEASON_PEAK_DOY,
        ge=1,
        le=366,
        description="Day of year of peak green (southern hemisphere: ~20).",
    )
    season_amplitude: float | None = Field(
        None, ge=0, le=1, description="Seasonal amplitude of log-area; default: estimated from the site's frames."
    )
    stale_days: int = Field(defaults.ALERT_STALE_DAYS, ge=5, le=730)
    new_ground: bool = Field(
        True, description="Alert on new ground outside the footprint (needs the series' new_ground_m2 column)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlertRules:
        if not (
            self.watch.pct <= self.warning.pct <= self.alarm.pct and self.watch.m2 <= self.warning.m2 <= self.alarm.m2
        ):
            raise ValueError("levels must not decrease: watch <= warning <= alarm (both pct and m2)")
        if self.confirm_count > self.confirm_window:
            raise ValueError(
                f"confirm_count ({self.confirm_count}) cannot exceed confirm_window ({self.confirm_window})"
            )
        return self


class Recipients(BaseModel):
    """Who hears about this site's alerts. Addresses and URLs only: SMTP and webhook credentials come from the
    environment (SCARMON_SMTP_*, SCARMON_WEBHOOK_*) or Prefect blocks, never from site files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    email: tuple[str, ...] = ()
    webhook: bool = Field(False, description="POST this site's alerts to $SCARMON_WEBHOOK_URL.")

    @field_validator("email")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for addr in v:
            if not re.fullmatch(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+", addr):
                raise ValueError(f"{addr!r} is not an e-mail address like name@example.org")
        return v


class BoxPrompt(BaseModel):
    """A box around the scar, [west, south, east, north] in lon/lat, on the frame of `date` (SAM 2's box prompt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    box: tuple[float, float, float, float]
    date: dt.date

    @field_validator("box")
    @classmethod
    def _ordered(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        w, s, e, n = v
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError("box must be [west, south, east, north] in degrees with west < east and south < north")
        return v


class Site(BaseModel):
    """A monitored landslide. Prompts are kept in lon/lat so they survive a change of grid resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str | None = None
    aoi: dict[str, Any]
    prompts: tuple[Prompt, ...]
    boxes: tuple[BoxPrompt, ...] = ()
    ndvi_threshold: float = Field(defaults.NDVI_THRESHOLD, ge=-1, le=1)
    bright_red_min: float | None = Field(
        defaults.BRIGHT_RED_MIN,
        gt=0,
        le=1,
        description="Red and NIR surface reflectance from which a pixel SCL calls clear is taken for cloud or snow "
        "(when its NIR/red ratio is at most 1.3) and left unobserved. Raise it (e.g. 0.45) for a scar of bright rock "
        "or sand (red 0.3-0.4), or set it to null to turn the test off: a bright scar taken for cloud hides its growth.",
    )
    max_cloud_fraction: float = Field(defaults.MAX_CLOUD_FRACTION, ge=0, le=1)
    min_coverage: float = Field(defaults.MIN_COVERAGE, ge=0, le=1)
    resolution_m: float = Field(defaults.RESOLUTION_M, gt=0, le=10)
    start: dt.date = dt.date.fromisoformat(defaults.START_DATE)
    alerts: AlertRules = AlertRules()
    recipients: Recipients = Recipients()
    schedule: str = Field(defaults.SCHEDULE_CRON, description="Cron expression (UTC) of the monitoring tick.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,\-A-Za-z?]+", f) for f in fields):
            raise ValueError(f"{v!r} is not a 5-field cron expression like '0 6 * * *' (minute hour day month weekday)")
        return v

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError(
                f"{v!r} is not a slug: use lowercase letters, digits and '-', starting with a letter or digit, "
                "at most 63 characters (it becomes part of storage keys)"
            )
        return v

    @field_validator("aoi")
    @classmethod
    def _aoi(cls, v: dict[str, Any]) -> dict[str, Any]:
        aoi_polygon(v)
        return v

    @model_validator(mode="after")
    def _prompts_in_aoi(self) -> Site:
        poly = self.polygon
        if not any(p.label == 1 for p in self.prompts) and not self.boxes:
            raise ValueError("prompts: at least one prompt with label 1 (a point inside the scar) or a box is needed")
        for i, b in enumerate(self.boxes):
            if not poly.intersects(box_polygon(b.box)):
                raise ValueError(f"boxes[{i}] {list(b.box)} lies outside the aoi polygon")
        for i, p in enumerate(self.prompts):
            if not poly.contains(Point(p.lon, p.lat)):
                raise ValueError(f"prompts[{i}] at lon={p.lon}, lat={p.lat} lies outside the aoi polygon")
        return self

    @property
    def polygon(self) -> Polygon:
        polygon: Polygon = shape(self.aoi)  # validated as a GeoJSON Polygon by the model
        return polygon

    @property
    def display_name(self) -> str:
        return self.name or self.id


def box_polygon(bounds: tuple[float, float, float, float]) -> Polygon:
    from shapely.geometry import box

    return box(*bounds)


def aoi_polygon(geojson: dict[str, Any]) -> Polygon:
    """Check that an AOI is one valid lon/lat polygon of at most MAX_AOI_KM2; raise ValueError saying what is wrong."""
    if not isinstance(geojson, dict) or geojson.get("type") != "Polygon":
        kind = geojson.get("type") if isinstance(geojson, dict) else type(geojson).__name__
        raise ValueError(f"must be a GeoJSON Polygon (got {kind!r}); give one ring of [lon, lat] pairs")
    try:
        poly = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise ValueError(f"malformed Polygon coordinates: {exc}") from exc
    if poly.is_empty or not poly.is_valid:
        raise ValueError(f"invalid polygon: {explain_validity(poly)}")
    minx, miny, maxx, maxy = poly.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise ValueError("coordinates must be [lon, lat] in degrees (EPSG:4326)")
    area = _area_km2(poly)
    if area > defaults.MAX_AOI_KM2:
        raise ValueError(
            f"covers {area:.1f} km², more than the {defaults.MAX_AOI_KM2:.0f} km² limit: draw a tighter AOI"
        )
    return poly


def _area_km2(poly: Polygon) -> float:
    from pyproj import Geod

    return abs(Geod(ellps="WGS84").geometry_area_perimeter(poly)[0]) / 1e6


def parse_site(data: Any, source: str = "<site>") -> Site:
    """Validate a site mapping; `source` names it in errors."""
    if not isinstance(data, dict):
        raise SiteError(f"{source}: a site file must be a YAML mapping of keys (id, aoi, prompts, ...)")
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise SiteError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see docs/site.schema.json)"
        lines.append(f"{source}: key '{key}': {msg}")
    return "\n".join(lines)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > defaults.SITE_FILE_MAX_BYTES:
            raise SiteError(
                f"{path}: {size:,} bytes is too big for a site file (the limit is "
                f"{defaults.SITE_FILE_MAX_BYTES:,} bytes); is this the right file?"
            )
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SiteError(f"{path}: cannot read the site file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SiteError(f"{path}: not a text file (a site file is UTF-8 YAML); is this the right file?") from None
    if "\x00" in text:
        raise SiteError(f"{path}: not a text file (it holds NUL bytes; a site file is UTF-8 YAML)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_site(data, str(path))


def site_schema() -> dict[str, Any]:
    """JSON Schema of site files (published as docs/site.schema.json)."""
    schema = Site.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "scarmon site file"
    return schema
