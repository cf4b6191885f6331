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
    SCARMON_DASHBOARD_URL          base URL of the dashboard; "{site}" in it is replaced by the site id,
                                   otherwise "/<site>/" is appended

Delivery is at least once per channel: a channel is marked sent right after the server accepted the message, so
only a crash in between could repeat it; the Message-ID / Idempotency-Key is the event id for receivers to dedupe.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable

import numpy as np

from scarmon.store import keys
from scarmon import defaults
from scarmon.alerts.history import OutboxEntry, mark, outbox, update_entry
from scarmon.alerts.rules import AlertEvent
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

        return str(Secret.load(env[block_var]).get())
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
        return (f"SmtpSettings(host={self.host!r}, port={self.port}, user={self.user!r}, password="
                f"{'***' if self.password else None}, starttls={self.starttls}, ssl={self.ssl})")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings | None:
        env = dict(os.environ if env is None else env)
        if not env.get("SCARMON_SMTP_HOST"):
            return None
        return cls(host=env["SCARMON_SMTP_HOST"], port=int(env.get("SCARMON_SMTP_PORT") or defaults.SMTP_PORT),
                   user=env.get("SCARMON_SMTP_USER") or None,
                   password=_secret(env, "SCARMON_SMTP_PASSWORD", "SCARMON_SMTP_PASSWORD_BLOCK"),
                   starttls=_env_bool("SCARMON_SMTP_STARTTLS", env), ssl=_env_bool("SCARMON_SMTP_SSL", env),
                   cafile=env.get("SCARMON_SMTP_CAFILE") or None,
                   sender=env.get("SCARMON_SMTP_FROM") or f"scarmon@{socket.gethostname()}")

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


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
        return cls(url=env["SCARMON_WEBHOOK_URL"],
                   token=_secret(env, "SCARMON_WEBHOOK_TOKEN", "SCARMON_WEBHOOK_TOKEN_BLOCK"))


def dashboard_link(site_id: str, env: dict[str, str] | None = None) -> str | None:
    base = (os.environ if env is None else env).get("SCARMON_DASHBOARD_URL")
    if not base:
        return None
    return base.replace("{site}", site_id) if "{site}" in base else f"{base.rstrip('/')}/{site_id}/"


def _scrub(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


# --- The boundary image: before vs now -----------------------------------------------------------------------------

def boundary_image(store: Store, site_id: str, event: AlertEvent, *, panel_px: int = 360) -> bytes | None:
    """PNG: the frame before the alert's first detection and the triggering frame, side by side, scar boundary
    drawn in each (yellow before, red now; the before boundary also dashed onto 'now'). None if frames are missing."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    from scarmon.ingest.frames import decode_png
    from scarmon.store.sequence import load_manifest
    from scarmon.tracking.pipeline import read_mask

    try:
        manifest, _ = load_manifest(store, site_id)
        frames = list(manifest.frames)
        now = next(f for f in frames if f.date == event.date and f.scene_id == event.scene_id)
        earlier = [f for f in frames if f.date < event.first_date]
        clear = [f for f in earlier if f.clear_fraction >= 0.9]
        before = (clear or earlier or frames)[-1 if (clear or earlier) else 0]
        panels = []
        masks = [read_mask(store, keys.mask(site_id, f)) for f in (before, now)]
        edges = [m & ~ndimage.binary_erosion(m, iterations=2) for m in masks]
        for k, (f, edge) in enumerate(zip((before, now), edges)):
            gray = decode_png(store.get(f.objects["video"]))
            rgb = np.repeat(gray[..., None], 3, axis=2).copy()
            if k == 1:
                rgb[edges[0]] = (255, 220, 0)
            rgb[edge] = (255, 220, 0) if k == 0 else (255, 40, 40)
            img = Image.fromarray(rgb, "RGB")
            img.thumbnail((panel_px, panel_px))
            panels.append((img, f"{'before' if k == 0 else 'now'} {f.date}"))
    except (KeyMissing, StopIteration, KeyError, OSError, ValueError) as exc:
        log.info("no boundary image for %s %s: %s", site_id, event.id, exc)
        return None
    w, h = panels[0][0].size
    canvas = Image.new("RGB", (2 * w + 10, h + 22), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, label) in enumerate(panels):
        canvas.paste(img.resize((w, h)), (i * (w + 10), 22))
        draw.text((i * (w + 10) + 4, 5), label, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    return buf.getvalue()


# --- E-mail ------------------------------------------------------------------------------------------------------------

def _numbers(e: AlertEvent) -> list[tuple[str, str]]:
    rows = [("Level", e.level.upper()), ("State", e.state), ("Event", e.event), ("Frame date", e.date),
            ("Scene", e.scene_id), ("Scar area", f"{e.area_m2:,.0f} m²")]
    if e.baseline_m2 is not None:
        rows.append(("Baseline", f"{e.baseline_m2:,.0f} m² ({e.baseline_kind})"))
    if e.change_m2 is not None:
        rows.append(("Change", f"{e.change_m2:+,.0f} m² ({e.change_pct:+.1f} %)"))
    rows += [("First detected", e.first_date), ("Why", e.reason)]
    if e.low_confidence:
        rows.append(("Note", "low-confidence frame"))
    return rows


def build_email(event: AlertEvent, *, site_name: str, sender: str, to: list[str], image: bytes | None = None,
                dashboard: str | None = None) -> EmailMessage:
    """A multipart message: plain text, and HTML with the before/now image inline (cid)."""
    msg = EmailMessage()
    msg["Subject"] = f"[scarmon] {event.level.upper()} {event.event}: {site_name} scar {event.change_pct or 0:+.0f} % ({event.date})"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{event.id}.{event.site}@scarmon>"
    msg["X-Scarmon-Alert"] = f"{event.site}/{event.id}"
    rows = _numbers(event)
    text = [f"scarmon alert for {site_name} ({event.site})", ""] + [f"{k:15s} {v}" for k, v in rows]
    if dashboard:
        text += ["", f"Dashboard: {dashboard}"]
    msg.set_content("\n".join(text) + "\n")
    cid = make_msgid(domain="scarmon")
    table = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    body = [f"<h2>{html.escape(event.level.upper())}: {html.escape(site_name)}</h2>", f"<table>{table}</table>"]
    if image:
        body.append(f"<p>Scar boundary before (yellow) and now (red):<br><img src='cid:{cid[1:-1]}' alt='boundary'></p>")
    if dashboard:
        body.append(f"<p><a href='{html.escape(dashboard)}'>Open the dashboard</a></p>")
    msg.add_alternative("<html><body>" + "".join(body) + "</body></html>", subtype="html")
    if image:
        msg.get_payload()[1].add_related(image, maintype="image", subtype="png", cid=cid, filename="boundary.png")
    return msg


def send_email(msg: EmailMessage, settings: SmtpSettings) -> None:
    """Send over SMTP (plain, STARTTLS or implicit TLS; AUTH when a user is set). Errors never carry the password."""
    try:
        if settings.ssl:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                                  context=settings.context())
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
        raise RuntimeError(_scrub(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}",
                                  settings.password)) from None


# --- Webhook -----------------------------------------------------------------------------------------------------------

def webhook_payload(event: AlertEvent, *, site_name: str, dashboard: str | None) -> dict[str, Any]:
    return {"type": "scarmon.alert", "site_name": site_name, "dashboard": dashboard, **event.to_dict()}


def post_webhook(payload: dict[str, Any], settings: WebhookSettings) -> None:
    """POST JSON with retries (connection errors, 429, 5xx) and exponential backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=settings.retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"POST"}), raise_on_status=False)
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
    sent: list[str] = field(default_factory=list)          # "event_id/channel"
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0

    def summary(self) -> str:
        s = f"site {self.site_id}: {len(self.sent)} notification(s) sent, {len(self.failed)} failed"
        return s + "".join(f"\n  failed {k}: {why} (kept in the outbox, retried next run)" for k, why in self.failed)


def deliver(store: Store, site_id: str, *, recipients: list[str], site_name: str | None = None,
            smtp: SmtpSettings | None = None, webhook: WebhookSettings | None = None,
            dashboard: str | None = None, env: dict[str, str] | None = None,
            send: Callable[[EmailMessage, SmtpSettings], None] = send_email,
            post: Callable[[dict[str, Any], WebhookSettings], None] = post_webhook) -> DeliveryReport:
    """Try every pending channel of every outbox entry once; record success or the error; never raises for a
    delivery failure (the entry stays for the next run)."""
    smtp = smtp or SmtpSettings.from_env(env)
    webhook = webhook or WebhookSettings.from_env(env)
    dashboard = dashboard or dashboard_link(site_id, env)
    report = DeliveryReport(site_id)
    for entry in outbox(store, site_id):
        _deliver_entry(store, site_id, entry, report, recipients, site_name or site_id, smtp, webhook, dashboard,
                       send, post)
    report.pending = len(outbox(store, site_id))
    return report


def _deliver_entry(store: Store, site_id: str, entry: OutboxEntry, report: DeliveryReport, recipients: list[str],
                   site_name: str, smtp: SmtpSettings | None, webhook: WebhookSettings | None, dashboard: str | None,
                   send: Callable, post: Callable) -> None:
    e = entry.event
    for channel in entry.pending():
        try:
            if channel == "email":
                if smtp is None:
                    raise NotConfigured("SMTP is not configured: set SCARMON_SMTP_HOST (see scarmon.alerts.notify)")
                if not recipients:
                    raise NotConfigured("no e-mail recipients in the site file (recipients.email)")
                msg = build_email(e, site_name=site_name, sender=smtp.sender, to=recipients,
                                  image=boundary_image(store, site_id, e), dashboard=dashboard)
                send(msg, smtp)
            elif channel == "webhook":
                if webhook is None:
                    raise NotConfigured("webhook is not configured: set SCARMON_WEBHOOK_URL")
                post(webhook_payload(e, site_name=site_name, dashboard=dashboard), webhook)
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
