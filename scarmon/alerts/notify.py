"""Notifications: e-mail over SMTP and a JSON webhook, delivered from each site's outbox (scarmon.alerts.history).

Settings and credentials come from the environment only (or Prefect Secret blocks named there), never from site
files; they are never logged, and error messages are scrubbed of them.

    SCARMON_SMTP_HOST, SCARMON_SMTP_PORT (25), SCARMON_SMTP_USER, SCARMON_SMTP_PASSWORD
    SCARMON_SMTP_PASSWORD_BLOCK    name of a Prefect Secret block holding the password (instead of the variable)
    SCARMON_SMTP_STARTTLS=1        upgrade with STARTTLS before AUTH; SCARMON_SMTP_SSL=1 for implicit TLS (465)
    SCARMON_SMTP_CAFILE            CA bundle to verify the server with (a private CA / self-signed server)
    SCARMON_SMTP_FROM              sender address (default scarmon@<hostname>)
    SCARMON_WEBHOOK_URL, SCARMON_WEBHOOK_TOKEN (sent as "Authorization: Bearer ..."),
    SCARMON_WEBHOOK_TOKEN_BLOCK    name of a Prefect Secret block holding the token
    SCARMON_DASHBOARD_URL          URL of the dashboard page (…/dashboard/index.html); "{site}" in it is
                                   replaced by the site id, otherwise "#site=<id>&date=<date>" is added
    SCARMON_MAP_URL                web map link of the scar in e-mails, with {lat}, {lon}, {zoom} (default
                                   https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map={zoom}/{lat}/{lon})

Delivery is at least once per channel: a channel is marked sent right after the server accepted the message, so
only a crash in between could repeat it; the Message-ID / Idempotency-Key is the event id for receivers to dedupe.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import os
import re
import smtplib
import socket
import ssl as _ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import numpy as np

from scarmon import defaults
from scarmon.alerts.history import OutboxEntry, mark, outbox, update_entry
from scarmon.alerts.rules import AlertEvent
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store

log = logging.getLogger(__name__)


class NotConfigured(RuntimeError):
    """A channel is wanted but its settings are missing; the delivery stays in the outbox."""


def _env_bool(name: str, env: dict[str, str]) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _secret(env: dict[str, str], value_var: str, block_var: str) -> str | None:
    if env.get(value_var):
        return env[value_var]
    if env.get(block_var):
        from prefect.blocks.system import Secret

        block: Any = Secret.load(env[block_var])  # sync in this (non-async) context; typed as maybe-a-coroutine
        return str(block.get())
    return None


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = defaults.SMTP_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    cafile: str | None = None
    sender: str = ""
    timeout: float = defaults.SMTP_TIMEOUT_S

    def __repr__(self) -> str:  # never print the password
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, user={self.user!r}, password="
            f"{'***' if self.password else None}, starttls={self.starttls}, ssl={self.ssl})"
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings | None:
        env = dict(os.environ if env is None else env)
        if not env.get("SCARMON_SMTP_HOST"):
            return None
        return cls(
            host=env["SCARMON_SMTP_HOST"],
            port=int(env.get("SCARMON_SMTP_PORT") or defaults.SMTP_PORT),
            user=env.get("SCARMON_SMTP_USER") or None,
            password=_secret(env, "SCARMON_SMTP_PASSWORD", "SCARMON_SMTP_PASSWORD_BLOCK"),
            starttls=_env_bool("SCARMON_SMTP_STARTTLS", env),
            ssl=_env_bool("SCARMON_SMTP_SSL", env),
            cafile=env.get("SCARMON_SMTP_CAFILE") or None,
            sender=env.get("SCARMON_SMTP_FROM") or f"scarmon@{socket.gethostname()}",
        )

    def context(self) -> _ssl.SSLContext:
        return _ssl.create_default_context(cafile=self.cafile)


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    token: str | None = field(default=None, repr=False)
    retries: int = defaults.WEBHOOK_RETRIES
    timeout: float = defaults.WEBHOOK_TIMEOUT_S

    def __repr__(self) -> str:
        return f"WebhookSettings(url={self.url!r}, token={'***' if self.token else None})"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebhookSettings | None:
        env = dict(os.environ if env is None else env)
        if not env.get("SCARMON_WEBHOOK_URL"):
            return None
        return cls(
            url=env["SCARMON_WEBHOOK_URL"], token=_secret(env, "SCARMON_WEBHOOK_TOKEN", "SCARMON_WEBHOOK_TOKEN_BLOCK")
        )


def dashboard_link(site_id: str, env: Mapping[str, str] | None = None, *, date: str | None = None) -> str | None:
    """The site's page on the dashboard: $SCARMON_DASHBOARD_URL is the dashboard's URL (…/dashboard/index.html);
    "{site}" in it is replaced by the site id, otherwise "#site=<id>" is added (and "&date=<date>" for a frame)."""
    base = (os.environ if env is None else env).get("SCARMON_DASHBOARD_URL")
    if not base:
        return None
    if "{site}" in base:
        return base.replace("{site}", site_id)
    return f"{base}{'&' if '#' in base else '#'}site={site_id}" + (f"&date={date}" if date else "")


def map_link(lon: float, lat: float, env: Mapping[str, str] | None = None, *, zoom: int = 16) -> str:
    """A web map at (lon, lat): $SCARMON_MAP_URL with {lat}, {lon} and {zoom} (default: openstreetmap.org)."""
    template = (os.environ if env is None else env).get("SCARMON_MAP_URL") or DEFAULT_MAP_URL
    return template.format(lat=f"{lat:.6f}", lon=f"{lon:.6f}", zoom=zoom)


DEFAULT_MAP_URL = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map={zoom}/{lat}/{lon}"


def _scrub(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def fmt_lonlat(lon: float, lat: float) -> str:
    return f"{abs(lat):.5f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.5f}° {'E' if lon >= 0 else 'W'}"


# --- Where, and the picture: before vs now -------------------------------------------------------------------------

BEFORE_RGB = (0, 200, 255)  # cyan outline, black halo: visible on any grey
NOW_RGB = (255, 40, 40)  # red outline, black halo
NODATA_RGB, HATCH_RGB = (214, 220, 228), (92, 104, 122)  # not observed: light blue-grey, dark diagonal hatching
COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


@dataclass(frozen=True)
class AlertContext:
    """Where an alert is and what the picture shows, read from the site's stored frames and masks."""

    image: bytes | None = None
    scar_lonlat: tuple[float, float] | None = None  # centre of the scar on the alert's frame
    before_date: str | None = None
    now_date: str | None = None
    new_ground_m2: float | None = None  # outside the 'before' outline, inside 'now'
    growth_lonlat: tuple[float, float] | None = None  # centre of that new ground
    growth_direction: str | None = None  # side of the scar it lies on (compass)
    not_observed_pct: tuple[float, float] | None = None  # share of the pictured area not observed, before / now

    def where_it_grew(self) -> str | None:
        if not self.new_ground_m2 or self.growth_lonlat is None:
            return None
        side = f" on the {self.growth_direction} side of the scar" if self.growth_direction else ""
        return (
            f"{self.new_ground_m2:,.0f} m² of new ground since {self.before_date}{side}, centred at "
            f"{fmt_lonlat(*self.growth_lonlat)}"
        )


def alert_context(store: Store, site_id: str, event: AlertEvent, *, panel_px: int = 360) -> AlertContext:
    """The before/now picture and the places of an alert; an empty AlertContext if frames or masks are missing."""
    from scarmon.grid import SiteGrid
    from scarmon.ingest.frames import decode_ndvi, decode_png
    from scarmon.store.sequence import load_manifest
    from scarmon.tracking.pipeline import read_mask

    try:
        manifest, _ = load_manifest(store, site_id)
        frames = list(manifest.frames)
        if manifest.grid is None:
            return AlertContext()
        grid = SiteGrid.from_dict(manifest.grid)
        now = next(f for f in frames if f.date == event.date and f.scene_id == event.scene_id)
        earlier = [f for f in frames if f.date < event.first_date]
        clear = [f for f in earlier if f.clear_fraction >= 0.9]
        before = (clear or earlier or frames)[-1 if (clear or earlier) else 0]
        pair = (before, now)
        masks = [read_mask(store, keys.mask(site_id, f)).astype(bool) for f in pair]
        grays = [decode_png(store.get(f.objects["video"])) for f in pair]
        valid = [
            np.isfinite(decode_ndvi(store.get(f.objects["ndvi"]))) if "ndvi" in f.objects else np.ones(g.shape, bool)
            for f, g in zip(pair, grays, strict=True)
        ]
    except (KeyMissing, StopIteration, KeyError, OSError, ValueError) as exc:
        log.info("no boundary image for %s %s: %s", site_id, event.id, exc)
        return AlertContext()
    except Exception as exc:  # noqa: BLE001 - the picture is a help, never a reason to hold back an alert
        log.warning("no boundary image for %s %s: %s: %s", site_id, event.id, type(exc).__name__, exc)
        return AlertContext()
    scar = None
    if masks[1].any():
        rows, cols = np.nonzero(masks[1])
        lon, lat = grid.pixel_to_lonlat(float(cols.mean()), float(rows.mean()))
        scar = (float(lon), float(lat))
    new = masks[1] & ~masks[0]
    growth = direction = None
    new_m2 = float(new.sum()) * grid.pixel_area_m2
    if new.any() and masks[1].any():
        rows, cols = np.nonzero(new)
        r0, c0 = np.nonzero(masks[0] if masks[0].any() else masks[1])
        glon, glat = grid.pixel_to_lonlat(float(cols.mean()), float(rows.mean()))
        growth = (float(glon), float(glat))
        dx, dy = cols.mean() - c0.mean(), -(rows.mean() - r0.mean())  # east, north in pixels
        if math.hypot(dx, dy) >= 1.0:
            direction = COMPASS[round(math.degrees(math.atan2(dx, dy)) % 360 / 45) % 8]
    image: bytes | None = None
    nodata: tuple[float, float] | None = None
    try:
        image, nodata = _render_pair(grays, masks, valid, [f.date for f in pair], grid.resolution, panel_px)
    except Exception as exc:  # noqa: BLE001 - as above: the e-mail goes out without its picture
        log.warning("cannot draw the boundary image for %s %s: %s: %s", site_id, event.id, type(exc).__name__, exc)
    return AlertContext(
        image=image,
        scar_lonlat=scar,
        before_date=before.date,
        now_date=now.date,
        new_ground_m2=new_m2,
        growth_lonlat=growth,
        growth_direction=direction,
        not_observed_pct=nodata,
    )


def boundary_image(store: Store, site_id: str, event: AlertEvent, *, panel_px: int = 360) -> bytes | None:
    """PNG: the frame before the alert's first detection and the triggering frame, side by side, zoomed on the scar:
    the 'before' outline in cyan, the 'now' outline in red (both with a black halo; 'before' also drawn on 'now'),
    what the satellite did not see on that date (clouds) hatched as no data, a legend and a scale bar. None if frames
    are missing."""
    return alert_context(store, site_id, event, panel_px=panel_px).image


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _render_pair(
    grays: list[np.ndarray],
    masks: list[np.ndarray],
    valid: list[np.ndarray],
    dates: list[str],
    resolution: float,
    panel_px: int,
) -> tuple[bytes, tuple[float, float]]:
    from PIL import Image, ImageDraw
    from scipy import ndimage

    union = masks[0] | masks[1]
    h, w = union.shape
    if union.any():
        rows, cols = np.nonzero(union)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        pad = max(12, int(0.6 * max(r1 - r0, c1 - c0)))
        r0, r1, c0, c1 = max(0, r0 - pad), min(h, r1 + pad), max(0, c0 - pad), min(w, c1 + pad)
    else:
        r0, r1, c0, c1 = 0, h, 0, w
    scale = panel_px / max(r1 - r0, c1 - c0)
    pw, ph = max(1, round((c1 - c0) * scale)), max(1, round((r1 - r0) * scale))

    def up(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(a[r0:r1, c0:c1].astype(np.uint8) * (255 if a.dtype == bool else 1))
        return np.asarray(img.resize((pw, ph), Image.Resampling.NEAREST))

    def outline(m: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        edge = m & ~ndimage.binary_erosion(m)
        line = ndimage.binary_dilation(edge, iterations=width)
        return line, ndimage.binary_dilation(line, iterations=2)

    big = [up(m) > 0 for m in masks]
    yy, xx = np.indices((ph, pw))
    hatch = (yy + xx) % 9 < 2
    panels, nodata = [], []
    for k in range(2):
        g = up(grays[k])
        rgb = np.repeat(g[..., None], 3, axis=2).copy()
        seen = up(valid[k]) > 0
        rgb[~seen] = NODATA_RGB
        rgb[~seen & hatch] = HATCH_RGB
        nodata.append(round(100.0 * float((~valid[k][r0:r1, c0:c1]).mean()), 1))
        if k == 1:  # the before outline under 'now', thin, so the growth shows between the two
            line, halo = outline(big[0], 1)
            rgb[halo & ~line] = (0, 0, 0)
            rgb[line] = BEFORE_RGB
        line, halo = outline(big[k], 2)
        rgb[halo & ~line] = (0, 0, 0)
        rgb[line] = BEFORE_RGB if k == 0 else NOW_RGB
        panels.append(Image.fromarray(rgb, "RGB"))
    gap, top, legend_h = 12, 26, 50
    canvas = Image.new("RGB", (2 * pw + gap, ph + top + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(12)
    for k, (img, label) in enumerate(zip(panels, (f"BEFORE  {dates[0]}", f"NOW  {dates[1]}"), strict=True)):
        x = k * (pw + gap)
        canvas.paste(img, (x, top))
        draw.rectangle([x + 2, 9, x + 22, 15], fill=BEFORE_RGB if k == 0 else NOW_RGB, outline="black")
        draw.text((x + 28, 4), label, fill="black", font=font)
        # north arrow (the site grid is north-up)
        ax, ay = x + pw - 16, top + 8
        draw.polygon([(ax, ay), (ax - 6, ay + 14), (ax + 6, ay + 14)], fill="white", outline="black")
        draw.text((ax - 4, ay + 15), "N", fill="black", font=small, stroke_width=2, stroke_fill="white")
    # legend: outlines, no data, scale bar
    y = top + ph + 10
    x = 4
    for color, text in ((BEFORE_RGB, f"scar outline before ({dates[0]})"), (NOW_RGB, f"scar outline now ({dates[1]})")):
        draw.rectangle([x, y + 4, x + 22, y + 9], fill=color, outline="black")
        draw.text((x + 28, y), text, fill="black", font=small)
        x += 40 + int(draw.textlength(text, font=small))
    sy, sx = np.indices((14, 23))
    swatch = np.where(((sy + sx) % 9 < 2)[..., None], np.array(HATCH_RGB, np.uint8), np.array(NODATA_RGB, np.uint8))
    canvas.paste(Image.fromarray(swatch.astype(np.uint8), "RGB"), (x, y))
    draw.rectangle([x, y, x + 22, y + 13], outline="black")
    draw.text((x + 28, y), "not observed that day (cloud): no data", fill="black", font=small)
    m_per_px = resolution / scale
    target = 0.3 * pw * m_per_px
    nice = max(v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if v <= max(target, 1))
    bar = nice / m_per_px
    y2, x2 = y + 22, 4
    draw.rectangle([x2, y2 + 4, x2 + bar, y2 + 9], fill="black")
    draw.text((x2 + bar + 6, y2), f"{nice:,} m" if nice < 1000 else f"{nice / 1000:g} km", fill="black", font=small)
    buf = io.BytesIO()
    canvas.save(buf, "PNG", optimize=True)
    return buf.getvalue(), (nodata[0], nodata[1])


# --- E-mail ------------------------------------------------------------------------------------------------------------


def explain_baseline(kind: str) -> str:
    """What the baseline of an alert is, in plain words."""
    k = (kind or "").strip()
    if k == "acknowledged":
        return "the area the scar had when the previous alert ended (growth already reported is not counted again)"
    m = re.match(r"same season (\d{4})", k)
    if m:
        return (
            f"the area in the same season of {m.group(1)} (vegetation hides or shows part of a scar with the "
            "seasons, so the scar is compared with the same time of year)"
        )
    m = re.match(r"rolling (\d+) d(?:, season ±(\d+) %)?", k)
    if m:
        text = f"the typical area over the previous {m.group(1)} days"
        if m.group(2):
            text += f", corrected for the seasonal swing of the vegetation (±{m.group(2)} %)"
        return text
    return f"the {k} baseline" if k else "the site's usual area"


EVENT_WORDS = {
    "provisional": "may be growing: a first image shows growth; the next clear images will confirm it or not",
    "confirmed": "is growing: later clear images confirmed the growth",
    "escalating": "keeps growing: the growth may reach a higher level",
    "escalated": "grew further: the alert was raised to a higher level",
    "finished": "has stopped growing: the alert is over",
    "reset": "did not grow after all: the first detection was not confirmed",
}


def plain_summary(e: AlertEvent, site_name: str, ctx: AlertContext | None = None) -> list[str]:
    """The alert in sentences a person can act on."""
    words = EVENT_WORDS.get(e.event, f"alert event '{e.event}'")
    out = [f"{e.level.upper()} for {site_name}: the landslide scar {words}."]
    size = f"On {e.date} the scar covered {e.area_m2:,.0f} m² ({e.area_m2 / 1e4:,.2f} ha)"
    if e.baseline_m2 is not None and e.change_m2 is not None:
        pct = f" ({e.change_pct:+.0f} %)" if e.change_pct is not None else ""
        size += (
            f", {e.change_m2:+,.0f} m²{pct} compared with {e.baseline_m2:,.0f} m², {explain_baseline(e.baseline_kind)}"
        )
    out.append(size + ".")
    if ctx is not None and ctx.where_it_grew():
        out.append(f"Where it grew: {ctx.where_it_grew()}.")
    out.append(
        f"First detected on {e.first_date}; the alert is now {e.state}." + (f" Rule: {e.reason}." if e.reason else "")
    )
    if e.low_confidence:
        out.append("Note: the image of this date is of low confidence (clouds or an odd jump); look before acting.")
    return out


def _numbers(e: AlertEvent, ctx: AlertContext | None = None, map_url: str | None = None) -> list[tuple[str, str]]:
    rows = [
        ("Level", e.level.upper()),
        ("State", e.state),
        ("Event", e.event),
        ("Frame date", e.date),
        ("Scene", e.scene_id),
    ]
    if ctx is not None and ctx.scar_lonlat is not None:
        rows.append(("Scar centre", fmt_lonlat(*ctx.scar_lonlat)))
    if map_url:
        rows.append(("Map", map_url))
    rows.append(("Scar area", f"{e.area_m2:,.0f} m²"))
    if e.baseline_m2 is not None:
        rows.append(("Compared with", f"{e.baseline_m2:,.0f} m²: {explain_baseline(e.baseline_kind)}"))
    if e.change_m2 is not None:
        pct = f" ({e.change_pct:+.1f} %)" if e.change_pct is not None else ""
        rows.append(("Change", f"{e.change_m2:+,.0f} m²{pct}"))
    rows += [("First detected", e.first_date), ("Why", e.reason)]
    if e.low_confidence:
        rows.append(("Note", "low-confidence frame"))
    return rows


LEVEL_HTML = {"watch": "#b07d00", "warning": "#d04a1f", "alarm": "#b0003a"}


def build_email(
    event: AlertEvent,
    *,
    site_name: str,
    sender: str,
    to: list[str],
    image: bytes | None = None,
    dashboard: str | None = None,
    context: AlertContext | None = None,
    env: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A multipart message that stands alone: plain text, and HTML (inline styles only, as mail clients want) with
    the before/now picture inline (cid); where the scar is (coordinates and a map link), what changed against which
    baseline and why, where it grew, and a link to the site's dashboard page."""
    image = image if image is not None else (context.image if context is not None else None)
    where = context.scar_lonlat if context is not None else None
    link = map_link(*where, env) if where is not None else None
    msg = EmailMessage()
    near = f" at {fmt_lonlat(*where)}" if where is not None else ""
    msg["Subject"] = (
        f"[scarmon] {event.level.upper()} {event.event}: {site_name} scar "
        f"{event.change_pct or 0:+.0f} % ({event.date}){near}"
    )
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{event.id}.{event.site}@scarmon>"
    msg["X-Scarmon-Alert"] = f"{event.site}/{event.id}"
    summary = plain_summary(event, site_name, context)
    rows = _numbers(event, context, link)
    text = [f"scarmon alert for {site_name} ({event.site})", "", *summary, ""]
    if where is not None:
        text += [f"Where: {fmt_lonlat(*where)}", f"Map: {link}", ""]
    text += [f"{k:15s} {v}" for k, v in rows]
    if image:
        text += [
            "",
            "Picture (attached): the scar outline before (cyan) and now (red); hatched grey was not "
            "observed that day (clouds).",
        ]
    if dashboard:
        text += ["", f"Dashboard: {dashboard}"]
    msg.set_content("\n".join(text) + "\n")
    cid = make_msgid(domain="scarmon")
    color = LEVEL_HTML.get(event.level, "#555555")
    td = "padding:2px 10px 2px 0;vertical-align:top;font-family:Arial,sans-serif;font-size:14px"
    table = "".join(
        f"<tr><th align='left' style='{td};color:#555'>{html.escape(k)}</th><td style='{td}'>"
        + (f"<a href='{html.escape(v)}'>{html.escape(v)}</a>" if k == "Map" else html.escape(v))
        + "</td></tr>"
        for k, v in rows
    )
    body = [
        f"<h2 style='font-family:Arial,sans-serif'><span style='background:{color};color:#ffffff;"
        f"padding:2px 8px;border-radius:4px'>{html.escape(event.level.upper())}</span> "
        f"{html.escape(site_name)}</h2>"
    ]
    body += [f"<p style='font-family:Arial,sans-serif;font-size:15px'>{html.escape(s)}</p>" for s in summary]
    if where is not None and link:
        body.append(
            f"<p style='font-family:Arial,sans-serif;font-size:15px'><b>Where:</b> "
            f"{html.escape(fmt_lonlat(*where))} · <a href='{html.escape(link)}'>open on a map</a></p>"
        )
    if image:
        body.append(
            "<p style='font-family:Arial,sans-serif;font-size:14px'>The scar outline "
            "<b style='color:#0090c0'>before (cyan)</b> and <b style='color:#e02020'>now (red)</b>; "
            "hatched grey was not observed that day (clouds):<br>"
            f"<img src='cid:{cid[1:-1]}' alt='scar outline before and now'></p>"
        )
    body.append(f"<table style='border-collapse:collapse'>{table}</table>")
    if dashboard:
        body.append(
            f"<p style='font-family:Arial,sans-serif;font-size:15px'><a href='{html.escape(dashboard)}'>"
            "Open the site on the dashboard</a> (all dates, the area chart, downloads)</p>"
        )
    msg.add_alternative("<html><body>" + "".join(body) + "</body></html>", subtype="html")
    if image:
        html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
        assert isinstance(html_part, EmailMessage)  # EmailMessage parts are EmailMessages
        html_part.add_related(image, maintype="image", subtype="png", cid=cid, filename="scar-before-now.png")
    return msg


def send_email(msg: EmailMessage, settings: SmtpSettings) -> None:
    """Send over SMTP (plain, STARTTLS or implicit TLS; AUTH when a user is set). Errors never carry the password."""
    try:
        if settings.ssl:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=settings.context()
            )
        else:
            conn = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with conn:
            conn.ehlo()
            if settings.starttls and not settings.ssl:
                conn.starttls(context=settings.context())
                conn.ehlo()
            if settings.user:
                conn.login(settings.user, settings.password or "")
            conn.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise RuntimeError(
            _scrub(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}", settings.password)
        ) from None


# --- Webhook -----------------------------------------------------------------------------------------------------------


def webhook_payload(
    event: AlertEvent,
    *,
    site_name: str,
    dashboard: str | None,
    context: AlertContext | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    where = context.scar_lonlat if context is not None else None
    return {
        "type": "scarmon.alert",
        "site_name": site_name,
        "dashboard": dashboard,
        "scar_lon": None if where is None else round(where[0], 7),
        "scar_lat": None if where is None else round(where[1], 7),
        "map": None if where is None else map_link(*where, env),
        "summary": " ".join(plain_summary(event, site_name, context)),
        **event.to_dict(),
    }


def post_webhook(payload: dict[str, Any], settings: WebhookSettings) -> None:
    """POST JSON with retries (connection errors, 429, 5xx) and exponential backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=settings.retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
    )
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(payload.get("id", ""))}
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    with requests.Session() as s:
        s.mount("http://", HTTPAdapter(max_retries=retry))
        s.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            r = s.post(settings.url, data=json.dumps(payload), headers=headers, timeout=settings.timeout)
        except requests.RequestException as exc:
            raise RuntimeError(_scrub(f"webhook {settings.url}: {type(exc).__name__}: {exc}", settings.token)) from None
    if r.status_code >= 300:
        raise RuntimeError(f"webhook {settings.url}: HTTP {r.status_code}: {r.text[:200]}")


# --- Delivering a site's outbox ----------------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    site_id: str
    sent: list[str] = field(default_factory=list)  # "event_id/channel"
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0

    def summary(self) -> str:
        s = f"site {self.site_id}: {len(self.sent)} notification(s) sent, {len(self.failed)} failed"
        return s + "".join(f"\n  failed {k}: {why} (kept in the outbox, retried next run)" for k, why in self.failed)


def deliver(
    store: Store,
    site_id: str,
    *,
    recipients: list[str],
    site_name: str | None = None,
    smtp: SmtpSettings | None = None,
    webhook: WebhookSettings | None = None,
    dashboard: str | None = None,
    env: dict[str, str] | None = None,
    send: Callable[[EmailMessage, SmtpSettings], None] = send_email,
    post: Callable[[dict[str, Any], WebhookSettings], None] = post_webhook,
) -> DeliveryReport:
    """Try every pending channel of every outbox entry once; record success or the error; never raises for a
    delivery failure (the entry stays for the next run)."""
    smtp = smtp or SmtpSettings.from_env(env)
    webhook = webhook or WebhookSettings.from_env(env)
    report = DeliveryReport(site_id)
    for entry in outbox(store, site_id):
        _deliver_entry(
            store,
            site_id,
            entry,
            report,
            recipients,
            site_name or site_id,
            smtp,
            webhook,
            dashboard or dashboard_link(site_id, env, date=entry.event.date),
            send,
            post,
            env,
        )
    report.pending = len(outbox(store, site_id))
    return report


def _deliver_entry(
    store: Store,
    site_id: str,
    entry: OutboxEntry,
    report: DeliveryReport,
    recipients: list[str],
    site_name: str,
    smtp: SmtpSettings | None,
    webhook: WebhookSettings | None,
    dashboard: str | None,
    send: Callable[[EmailMessage, SmtpSettings], None],
    post: Callable[[dict[str, Any], WebhookSettings], None],
    env: Mapping[str, str] | None,
) -> None:
    e = entry.event
    ctx: AlertContext | None = None
    for channel in entry.pending():
        try:
            if channel == "email":
                if smtp is None:
                    raise NotConfigured("SMTP is not configured: set SCARMON_SMTP_HOST (see scarmon.alerts.notify)")
                if not recipients:
                    raise NotConfigured("no e-mail recipients in the site file (recipients.email)")
                ctx = ctx or alert_context(store, site_id, e)
                msg = build_email(
                    e, site_name=site_name, sender=smtp.sender, to=recipients, context=ctx, dashboard=dashboard, env=env
                )
                send(msg, smtp)
            elif channel == "webhook":
                if webhook is None:
                    raise NotConfigured("webhook is not configured: set SCARMON_WEBHOOK_URL")
                ctx = ctx or alert_context(store, site_id, e)
                post(webhook_payload(e, site_name=site_name, dashboard=dashboard, context=ctx, env=env), webhook)
            else:
                raise NotConfigured(f"unknown channel {channel!r}")
        except Exception as exc:  # noqa: BLE001 - any failure keeps the delivery for the next run
            why = str(exc) or type(exc).__name__
            log.warning("alert %s/%s via %s not delivered: %s", site_id, e.id, channel, why)
            mark(entry, channel, ok=False, error=why)
            report.failed.append((f"{e.id}/{channel}", why))
        else:
            log.info("alert %s/%s sent via %s", site_id, e.id, channel)
            mark(entry, channel, ok=True)
            report.sent.append(f"{e.id}/{channel}")
        update_entry(store, site_id, entry)  # after each channel: a crash later does not resend this one
