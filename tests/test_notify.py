"""E-mail over a real SMTP server on loopback (aiosmtpd: plain, and STARTTLS + AUTH with a self-signed cert), the
webhook against a local http.server, and the outbox: a failed delivery is kept and sent exactly once later."""

import datetime as dt
import http.server
import json
import re
import socket
import ssl
import threading
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from scarmon.alerts.history import enqueue, outbox, read_history, record, sent
from scarmon.alerts.notify import SmtpSettings, WebhookSettings, build_email, deliver, send_email
from scarmon.alerts.rules import AlertEvent, replay
from scarmon.store.backends import LocalStore
from tests.alert_series import sela
from tests.test_products_support import browser, page, tracked_store_dir  # noqa: F401 (fixtures)

NOTIFY_ALL = ("provisional", "confirmed", "escalating", "escalated", "finished")


class Sink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_plain():
    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield sink, ctl
    ctl.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def smtp_tls(cert):
    sink = Sink()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)

    def auth(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"alerts" and auth_data.password == b"s3cret-pw"
        return AuthResult(success=ok)

    ctl = Controller(
        sink,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=ctx,
        require_starttls=True,
        authenticator=auth,
        auth_required=True,
    )
    ctl.start()
    yield sink, ctl, cert[0]
    ctl.stop()


def an_event(**kw):
    _, events = replay(sela(0), site="sela")
    e = next(e for e in events if e.event == "confirmed")
    return AlertEvent(**{**e.__dict__, **kw})


def test_plain_smtp_html_text_and_numbers(smtp_plain):
    sink, ctl = smtp_plain
    e = an_event()
    msg = build_email(
        e,
        site_name="Sela",
        sender="scarmon@test",
        to=["ops@example.org"],
        image=b"\x89PNG fake",
        dashboard="http://dash/sela/",
    )
    send_email(msg, SmtpSettings(host="127.0.0.1", port=ctl.port, sender="scarmon@test"))
    [(rcpt, got)] = sink.messages
    assert rcpt == ["ops@example.org"]
    assert e.level.upper() in got["Subject"] and "Sela" in got["Subject"]
    text = got.get_body(("plain",)).get_content()
    html = got.get_body(("html",)).get_content()
    for s in (f"{e.area_m2:,.0f} m²", f"{e.baseline_m2:,.0f} m²", e.date, e.first_date, "http://dash/sela/"):
        assert s in text and s in html
    [img] = [p for p in got.walk() if p.get_content_type() == "image/png"]
    assert f"cid:{img['Content-ID'][1:-1]}" in html


def test_starttls_and_auth(smtp_tls, caplog):
    sink, ctl, ca = smtp_tls
    env = {
        "SCARMON_SMTP_HOST": "127.0.0.1",
        "SCARMON_SMTP_PORT": str(ctl.port),
        "SCARMON_SMTP_USER": "alerts",
        "SCARMON_SMTP_PASSWORD": "s3cret-pw",
        "SCARMON_SMTP_STARTTLS": "1",
        "SCARMON_SMTP_CAFILE": str(ca),
        "SCARMON_SMTP_FROM": "scarmon@test",
    }
    settings = SmtpSettings.from_env(env)
    assert "s3cret-pw" not in repr(settings)
    msg = build_email(an_event(), site_name="Sela", sender=settings.sender, to=["a@example.org"])
    send_email(msg, settings)
    assert len(sink.messages) == 1
    # without STARTTLS the server refuses; the error never shows the password
    with pytest.raises(RuntimeError) as err:
        send_email(msg, SmtpSettings(**{**settings.__dict__, "starttls": False}))
    assert "s3cret-pw" not in str(err.value)
    with pytest.raises(RuntimeError) as err:
        send_email(msg, SmtpSettings(**{**settings.__dict__, "password": "wrong", "timeout": 3}))
    assert "wrong" not in str(err.value) and len(sink.messages) == 1
    assert "s3cret-pw" not in caplog.text


def test_delivery_failure_kept_in_outbox_then_sent_exactly_once(tmp_path):
    store = LocalStore(tmp_path)
    state, events = replay(sela(0), site="sela")
    queued = record(store, "sela", state, events, notify_on=NOTIFY_ALL, channels=["email"])
    assert queued and len(outbox(store, "sela")) == len(queued)
    assert [r["id"] for r in read_history(store, "sela")] == [e.id for e in events]
    sink = Sink()
    port = free_port()
    env = {"SCARMON_SMTP_HOST": "127.0.0.1", "SCARMON_SMTP_PORT": str(port)}
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    calls = []

    def send_then_stop(msg, settings):
        calls.append(msg["Message-ID"])
        send_email(msg, settings)
        if len(calls) == 1:
            ctl.stop()  # the server goes away mid-run

    r1 = deliver(store, "sela", recipients=["ops@example.org"], env=env, send=send_then_stop)
    assert len(r1.sent) == 1 and len(r1.failed) == len(queued) - 1 >= 1
    assert len(outbox(store, "sela")) == len(queued) - 1
    # a re-run of the same tick neither duplicates history nor re-queues what was sent
    record(store, "sela", state, events, notify_on=NOTIFY_ALL, channels=["email"])
    assert len(read_history(store, "sela")) == len(events) and len(outbox(store, "sela")) == len(queued) - 1
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        r2 = deliver(store, "sela", recipients=["ops@example.org"], env=env)
        r3 = deliver(store, "sela", recipients=["ops@example.org"], env=env)
    finally:
        ctl.stop()
    assert len(r2.sent) == len(queued) - 1 and not r2.failed and not r3.sent
    ids = [m["Message-ID"] for _, m in sink.messages]
    assert sorted(ids) == sorted(f"<{e.id}.sela@scarmon>" for e in queued)  # each alert exactly once
    assert outbox(store, "sela") == [] and len(sent(store, "sela")) == len(queued)


def test_not_configured_stays_in_outbox(tmp_path):
    store = LocalStore(tmp_path)
    assert enqueue(store, "s", an_event(site="s"), ["email", "webhook"])
    r = deliver(store, "s", recipients=["a@b.org"], env={})
    assert len(r.failed) == 2 and "SCARMON_SMTP_HOST" in r.failed[0][1]
    [entry] = outbox(store, "s")
    assert entry.channels["email"]["attempts"] == 1 and entry.channels["email"]["status"] == "pending"


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Hook.received.append((dict(self.headers), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_webhook_json_post_with_retries(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Hook.received, Hook.fail_first = [], 2
    try:
        store = LocalStore(tmp_path)
        e = an_event()
        enqueue(store, "sela", e, ["webhook"])
        hook = WebhookSettings(url=f"http://127.0.0.1:{srv.server_address[1]}/alerts", token="tok-123")
        r = deliver(store, "sela", recipients=[], webhook=hook)
        assert r.sent == [f"{e.id}/webhook"]
        [(headers, payload)] = Hook.received
        assert headers["Authorization"] == "Bearer tok-123" and headers["Idempotency-Key"] == e.id
        for k in ("site", "date", "level", "state", "area_m2", "baseline_m2"):
            assert payload[k] == e.to_dict()[k]
        assert deliver(store, "sela", recipients=[], webhook=hook).sent == []
    finally:
        srv.shutdown()


def test_alert_email_stands_alone(tracked_store_dir, tmp_path, smtp_plain, page):
    """Delivered through a real SMTP server: where the scar is (coordinates, a map link), what changed against which
    baseline in plain words, where it grew, a link to the site's dashboard page, and a before/now picture whose
    outlines carry a black halo and whose cloud (not observed) pixels are hatched, never drawn like scar. Rendered
    in Chromium as a person would see it (screenshot)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from scarmon.alerts.notify import BEFORE_RGB, HATCH_RGB, NODATA_RGB, NOW_RGB
    from scarmon.grid import SiteGrid
    from scarmon.ingest.frames import decode_ndvi, encode_ndvi
    from scarmon.store.sequence import load_manifest
    from tests.test_products_support import LAT, LON, copy_store, screenshot_dir

    sink, ctl = smtp_plain
    store = copy_store(tracked_store_dir, tmp_path / "store")
    manifest, _ = load_manifest(store, "test-slide")
    grid = SiteGrid.from_dict(manifest.grid)
    now = next(f for f in manifest.frames if f.date == "2022-08-04")
    ndvi = decode_ndvi(store.get(now.objects["ndvi"]))
    cx, cy = grid.lonlat_to_pixel(LON, LAT)
    ndvi[int(cy) - 30 : int(cy) - 4, int(cx) - 40 : int(cx) + 40] = np.nan  # a cloud over the scar's northern half
    store.put(now.objects["ndvi"], encode_ndvi(ndvi, grid))
    e = AlertEvent(
        site="test-slide",
        date="2022-08-04",
        scene_id=now.scene_id,
        event="confirmed",
        state="confirmed",
        level="alarm",
        area_m2=7080.0,
        baseline_m2=3500.0,
        baseline_kind="rolling 120 d, season ±12 %",
        change_m2=3580.0,
        change_pct=102.3,
        alert_id="2022-07-10_S2A_20220710_R033",
        first_date="2022-07-10",
        reason="growth +102 % (9.5 noise sd) over the rolling 120 d baseline",
    )
    enqueue(store, "test-slide", e, ["email"])
    env = {
        "SCARMON_SMTP_HOST": "127.0.0.1",
        "SCARMON_SMTP_PORT": str(ctl.port),
        "SCARMON_DASHBOARD_URL": "https://bucket.example.org/store/dashboard/index.html",
    }
    r = deliver(store, "test-slide", recipients=["ops@example.org"], site_name="Test slide", env=env)
    assert r.sent == [f"{e.id}/email"], r.failed
    [(_, got)] = sink.messages
    text = got.get_body(("plain",)).get_content()
    body = got.get_body(("html",)).get_content()
    where = r"31\.(0999\d|1000\d)° N, (95\.9999\d|96\.0000\d)° E"  # the scar's centre: the site's prompt
    assert re.search(r"at\s+" + where, got["Subject"]) and re.search("Where: " + where, text)
    assert re.search(r"https://www\.openstreetmap\.org/\?mlat=31\.(0999|1000)\d+&mlon=(95\.9999|96\.0000)", text)
    for s in (
        "compared with 3,500 m², the typical area over the previous 120 days, corrected for the seasonal swing",
        "Where it grew: ",
        "m² of new ground since 2022-06-15",
        "the landslide scar is growing: later clear images confirmed the growth",
        "https://bucket.example.org/store/dashboard/index.html#site=test-slide&date=2022-08-04",
        "hatched grey was not observed that day (clouds)",
    ):
        assert s in text, s
    assert "Baseline (" not in text and "open on a map" in body and "style='background:#b0003a" in body
    [part] = [p for p in got.walk() if p.get_content_type() == "image/png"]
    picture = np.asarray(Image.open(io.BytesIO(part.get_content())).convert("RGB"))
    rgb = picture[26:-50]  # the two panels, without the titles above and the legend below
    half = rgb.shape[1] // 2

    def has(color, region):
        return int(np.all(region == np.array(color, np.uint8), axis=-1).sum())

    assert has(BEFORE_RGB, rgb[:, :half]) > 100 and has(NOW_RGB, rgb[:, half:]) > 100
    assert has(NOW_RGB, rgb[:, :half]) == 0  # 'before' carries only its own outline
    assert has(HATCH_RGB, rgb[:, half:]) > 50 and has(NODATA_RGB, rgb[:, half:]) > 200  # the cloud: no data
    assert has(HATCH_RGB, rgb[:, :half]) == 0  # the clear 'before' frame has none
    red = np.all(rgb == np.array(NOW_RGB, np.uint8), axis=-1)
    ys, xs = np.nonzero(red)
    beside = rgb[ys, np.clip(xs + 3, 0, rgb.shape[1] - 1)]
    assert (beside.sum(axis=1) == 0).mean() > 0.2  # a black halo around the red line
    html_inline = body.replace(
        f"cid:{part['Content-ID'][1:-1]}", "data:image/png;base64," + base64.b64encode(part.get_content()).decode()
    )
    page.set_content(html_inline)
    page.wait_for_function("document.images[0].complete && document.images[0].naturalWidth > 0")
    page.screenshot(path=str(screenshot_dir() / "alert-email.png"), full_page=True)
    Image.open(io.BytesIO(part.get_content())).save(screenshot_dir() / "alert-email-picture.png")
    assert page.errors == []
