"""E-mail over a real SMTP server on loopback (aiosmtpd: plain, and STARTTLS + AUTH with a self-signed cert), the
webhook against a local http.server, and the outbox: a failed delivery is kept and sent exactly once later."""

import datetime as dt
import http.server
import json
import socket
import ssl
import threading
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from scarmon.alerts.history import enqueue, outbox, read_history, record, sent
from scarmon.alerts.rules import AlertEvent, replay
from scarmon.alerts.notify import SmtpSettings, WebhookSettings, build_email, deliver, send_email
from scarmon.store.backends import LocalStore
from tests.alert_series import sela

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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
         .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def smtp_tls(cert):
    sink = Sink()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)

    def auth(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"alerts" and auth_data.password == b"s3cret-pw"
        return AuthResult(success=ok)

    ctl = Controller(sink, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True,
                     authenticator=auth, auth_required=True)
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
    msg = build_email(e, site_name="Sela", sender="scarmon@test", to=["ops@example.org"], image=b"\x89PNG fake",
                      dashboard="http://dash/sela/")
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
    env = {"SCARMON_SMTP_HOST": "127.0.0.1", "SCARMON_SMTP_PORT": str(ctl.port), "SCARMON_SMTP_USER": "alerts",
           "SCARMON_SMTP_PASSWORD": "s3cret-pw", "SCARMON_SMTP_STARTTLS": "1", "SCARMON_SMTP_CAFILE": str(ca),
           "SCARMON_SMTP_FROM": "scarmon@test"}
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
    assert sorted(ids) == sorted(f"<{e.id}.sela@scarmon>" for e in queued)   # each alert exactly once
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
