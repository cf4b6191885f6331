"""Where alerts live in the store, per site:

    {site}/alerts/state.json            the state machine's state (scarmon.alerts.rules.AlertState)
    {site}/alerts.jsonl                 the alert history: one JSON object per event, append-only, deduplicated by id
    {site}/alerts/outbox/{id}.json      events still to deliver, with per-channel status (pending / sent)
    {site}/alerts/sent/{id}.json        delivered events, moved out of the outbox

Order of writes in `record`: outbox entries, then the history, then the state. A crash in between is repaired by
the next run, which re-derives the same events (same ids) from the same state: each write is idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scarmon.alerts.rules import AlertEvent, AlertState
from scarmon.store import keys
from scarmon.store.backends import Conflict, KeyMissing, Store
from scarmon.store.documents import update_document

CHANNELS = ("email", "webhook")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_state(store: Store, site_id: str) -> AlertState:
    try:
        return AlertState.from_dict(json.loads(store.get(keys.alert_state(site_id))))
    except KeyMissing:
        return AlertState(site=site_id)


def save_state(store: Store, site_id: str, state: AlertState) -> None:
    store.put(
        keys.alert_state(site_id), json.dumps(state.to_dict(), indent=1).encode(), content_type="application/json"
    )


def read_history(store: Store, site_id: str) -> list[dict[str, Any]]:
    try:
        text = store.get(keys.alert_history(site_id)).decode()
    except KeyMissing:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def append_history(
    store: Store, site_id: str, events: Iterable[AlertEvent], *, extra: dict[str, Any] | None = None
) -> int:
    """Append events not yet in alerts.jsonl (by id) with a conditional write; returns how many were added.
    Lines that are not JSON objects are kept as they are (the history is append-only) and refused nowhere."""
    events = list(events)
    added = 0

    def change(data: bytes | None) -> bytes | None:
        nonlocal added
        data = data or b""
        known = {_line_id(line) for line in data.decode("utf-8", "replace").splitlines() if line.strip()}
        new = [e for e in events if e.id not in known]
        added = len(new)
        if not new:
            return None
        lines = "".join(json.dumps({**e.to_dict(), **(extra or {}), "recorded_at": _now()}) + "\n" for e in new)
        return (data if not data or data.endswith(b"\n") else data + b"\n") + lines.encode()

    if events:
        update_document(
            store,
            keys.alert_history(site_id),
            change,
            parse=bytes,
            dump=bytes,
            what="alert history",
            content_type="application/x-ndjson",
        )
    return added


def _line_id(line: str) -> str | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc.get("id") if isinstance(doc, dict) else None


@dataclass
class OutboxEntry:
    event: AlertEvent
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel -> {status, attempts, ...}
    created_at: str = ""

    def pending(self) -> list[str]:
        return [c for c, st in self.channels.items() if st.get("status") != "sent"]

    def to_json(self) -> bytes:
        return json.dumps(
            {"event": self.event.to_dict(), "channels": self.channels, "created_at": self.created_at}, indent=1
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OutboxEntry:
        d = json.loads(data)
        return cls(AlertEvent.from_dict(d["event"]), d.get("channels", {}), d.get("created_at", ""))


def enqueue(store: Store, site_id: str, event: AlertEvent, channels: Iterable[str]) -> bool:
    """Put an event in the outbox for `channels` unless it is already there or already sent; True if queued."""
    channels = list(channels)
    if not channels or store.exists(keys.sent_entry(site_id, event.id)):
        return False
    entry = OutboxEntry(event, {c: {"status": "pending", "attempts": 0} for c in channels}, _now())
    try:
        store.put_if(
            keys.outbox_entry(site_id, event.id), entry.to_json(), expected_tag=None, content_type="application/json"
        )
        return True
    except Conflict:
        return False


def outbox(store: Store, site_id: str) -> list[OutboxEntry]:
    """Pending deliveries, oldest event first."""
    out = []
    for key in store.list(keys.outbox_prefix(site_id)):
        if key.endswith(".json"):
            try:
                out.append(OutboxEntry.from_json(store.get(key)))
            except KeyMissing:
                continue
    return sorted(out, key=lambda e: (e.event.date, e.event.id))


def sent(store: Store, site_id: str) -> list[OutboxEntry]:
    return [OutboxEntry.from_json(store.get(k)) for k in store.list(keys.sent_prefix(site_id)) if k.endswith(".json")]


def update_entry(store: Store, site_id: str, entry: OutboxEntry) -> None:
    """Persist the channels' status; once every channel is sent, move the entry to alerts/sent/."""
    key = keys.outbox_entry(site_id, entry.event.id)
    if entry.pending():
        store.put(key, entry.to_json(), content_type="application/json")
        return
    store.put(keys.sent_entry(site_id, entry.event.id), entry.to_json(), content_type="application/json")
    store.delete(key)


def mark(entry: OutboxEntry, channel: str, *, ok: bool, error: str = "") -> None:
    st = entry.channels.setdefault(channel, {"status": "pending", "attempts": 0})
    st["attempts"] = int(st.get("attempts", 0)) + 1
    st["last_attempt"] = _now()
    if ok:
        st["status"], st["sent_at"] = "sent", st["last_attempt"]
        st.pop("last_error", None)
    else:
        st["last_error"] = error[:500]


def record(
    store: Store,
    site_id: str,
    state: AlertState,
    events: list[AlertEvent],
    *,
    notify_on: Iterable[str],
    channels: Iterable[str],
    suppress: bool = False,
    note: str = "backfill",
) -> list[AlertEvent]:
    """Persist one alert step's result: queue the events to notify, append all to the history, save the state.
    With `suppress` (backfill) nothing is queued and history rows say so. Returns the events queued."""
    queued = []
    notify_on, channels = set(notify_on), list(channels)
    if not suppress:
        for e in events:
            if e.event in notify_on and enqueue(store, site_id, e, channels):
                queued.append(e)
    append_history(store, site_id, events, extra={"notified": False, "note": note} if suppress else None)
    save_state(store, site_id, state)
    return queued
