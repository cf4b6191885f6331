"""The offline demo as unattended monitoring: the synthetic history replayed as a sequence of scheduled ticks
through the `monitor_site` Prefect flow (ephemeral Prefect, no server), alerts e-mailed to a local SMTP sink on
127.0.0.1 (aiosmtpd) and saved as .eml files, then shown."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class _Sink:
    def __init__(self, folder: Path) -> None:
        self.folder, self.subjects = folder, list[str]()
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's handler hook
        from email import message_from_bytes, policy

        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.subjects.append(str(msg["Subject"]))
        (self.folder / f"{len(self.subjects):03d}.eml").write_bytes(envelope.content)
        return "250 OK"


def _tick(flow: Any, site_path: Path, out: Path, items: Path, end: dt.date) -> dict[str, Any]:
    """One replayed tick through the monitor_site flow; a failed tick stops the demo with the flow's message."""
    state = flow(str(site_path), store=str(out / "store"), catalog=str(items), end=end, return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"the demo tick of {end} failed: {state.message}")
    from scarmon.service.flows import state_result

    report: dict[str, Any] = state_result(state)
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tick_dates(start: str, end: str, every_days: int) -> list[dt.date]:
    s, e = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    out, d = [], s + dt.timedelta(days=every_days)
    while d < e:
        out.append(d)
        d += dt.timedelta(days=every_days)
    return out + [e]


DASHBOARD = "http://127.0.0.1:8000/dashboard/index.html"


def run_tick_demo(
    out: Path, *, scenario: str, start: str, end: str, every_days: int = 30, echo: Callable[[str], object] = print
) -> None:
    from aiosmtpd.controller import Controller

    from scarmon.demo.quick import write_demo_site
    from scarmon.demo.synthetic import generate_catalog

    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the demo prints its own one line per tick
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    site_path = write_demo_site(out, scenario)
    doc = yaml.safe_load(site_path.read_text())
    doc["recipients"] = {"email": ["duty-officer@example.org"]}
    site_path.write_text(
        "# Synthetic demo site written by `scarmon demo --ticks`.\n" + yaml.safe_dump(doc, sort_keys=False)
    )
    items = out / "catalog" / "items.json"
    t0 = time.monotonic()
    if not items.exists():
        items = generate_catalog(out / "catalog", doc, scenario=scenario, start=start, end=end)
    echo(f"synthetic catalog ({scenario}, {start} to {end}): {items} [{time.monotonic() - t0:.0f} s]")
    sink = _Sink(out / "mail")
    ctl = Controller(sink, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    os.environ.update(
        {
            "SCARMON_SMTP_HOST": "127.0.0.1",
            "SCARMON_SMTP_PORT": str(ctl.port),
            "SCARMON_SMTP_FROM": "scarmon-demo@localhost",
            "SCARMON_DASHBOARD_URL": DASHBOARD + "#site={site}",
        }
    )
    try:
        from scarmon.service.flows import monitor_site

        dates = tick_dates(start, end, every_days)
        echo(
            f"replaying {len(dates)} scheduled ticks (every {every_days} days) through the monitor_site flow; "
            f"alerts go to the SMTP sink on 127.0.0.1:{ctl.port}"
        )
        t0 = time.monotonic()
        for d in dates:
            r = _tick(monitor_site, site_path, out, items, d)
            ev = (
                "; ".join(
                    f"{e['date']} {e['event']} {e['level']} ({e['change_pct']:+.0f} % over {e['baseline_m2']:,.0f} m²)"
                    for e in r["events"]
                )
                or "-"
            )
            echo(
                f"tick {d}: +{r['appended']} frame(s), alert state {r['alert_state']}/{r['alert_level']}, "
                f"mailed {len(r['sent'])}; events: {ev}"
            )
        echo(f"{len(dates)} ticks in {time.monotonic() - t0:.0f} s; a re-run of the last tick:")
        r = _tick(monitor_site, site_path, out, items, dates[-1])
        echo(f"  +{r['appended']} frame(s), {len(r['events'])} event(s), {len(r['sent'])} mail(s) (idempotent)")
    finally:
        ctl.stop()
    echo(f"{len(sink.subjects)} alert e-mail(s) received by the sink, saved in {out / 'mail'}:")
    for s in sink.subjects:
        echo(f"  {s}")
    echo(
        f"alert history: {out / 'store' / doc['id'] / 'alerts.jsonl'}  (also: scarmon alerts --site {site_path} "
        f"--store {out / 'store'})"
    )
    echo(
        f"dashboard: serve the store folder, then open the page (any static HTTP server works):\n"
        f"  python -m http.server --bind 127.0.0.1 --directory {out / 'store'} 8000\n"
        f"  {DASHBOARD}#site={doc['id']}"
    )
