"""Is every site alive? The health of a store's sites, read from the store only (never changes anything): the
figures of `scarmon status` and of `status --json` for monitoring systems."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from scarmon.alerts.history import load_state, outbox
from scarmon.alerts.rules import LEVELS, site_status
from scarmon.errors import ScarmonError
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store
from scarmon.store.lock import lease_ttl_s
from scarmon.store.sequence import load_manifest


def sites_health(
    st: Store, *, names: dict[str, str | None] | None = None, stale_hours: float = 48.0
) -> tuple[list[dict[str, Any]], list[str]]:
    """Health rows of the sites in `names` (id -> display name), or of every site the store knows (its site index
    and every `{site}/manifest.json`); and warnings for people (an unreadable site index)."""
    warnings: list[str] = []
    published: dict[str, dict[str, Any]] = {}
    try:
        doc = json.loads(st.get(keys.SITES_INDEX))
        published = {str(s["id"]): s for s in doc.get("sites", []) if isinstance(s, dict) and s.get("id")}
    except KeyMissing:
        pass
    except (ValueError, AttributeError):
        warnings.append(f"{st.url(keys.SITES_INDEX)} is not a valid site index; listing the store instead")
    if names is None:
        names = {sid: s.get("name") for sid, s in published.items()}
        for key in st.list(""):
            parts = key.split("/")
            if len(parts) == 2 and parts[1] == "manifest.json":
                names.setdefault(parts[0], None)
    if not names:
        raise ScarmonError(f"no sites in {st.uri}: check --store, or run `scarmon monitor` first")
    rows = [site_health(st, sid, name, published.get(sid), stale_hours) for sid, name in sorted(names.items())]
    return rows, warnings


def site_health(
    st: Store, site_id: str, name: str | None, published: dict[str, Any] | None, stale_hours: float
) -> dict[str, Any]:
    """The figures of one site, read from the store only (never changes anything)."""

    now = dt.datetime.now(dt.UTC)
    out: dict[str, Any] = {"site": site_id, "name": name or (published or {}).get("name") or site_id}
    errors: list[str] = []

    def doc(key: str) -> dict[str, Any] | None:
        try:
            d = json.loads(st.get(key))
        except KeyMissing:
            return None
        except ValueError:
            errors.append(f"{key} is not valid JSON")
            return None
        return d if isinstance(d, dict) else None

    status = doc(keys.status(site_id)) or {}
    checked = status.get("updated_at")
    try:
        checked_age = (now - dt.datetime.fromisoformat(str(checked))).total_seconds() if checked else None
    except ValueError:
        checked_age = None
    out.update(
        last_tick=checked,
        last_tick_age_s=None if checked_age is None else round(checked_age),
        last_tick_outcome=status.get("outcome") or ("ok" if checked else None),
    )
    frames: tuple[Any, ...] = ()
    if st.exists(keys.manifest(site_id)):
        try:
            frames = load_manifest(st, site_id)[0].frames
        except Exception as exc:  # noqa: BLE001 - a damaged manifest is reported, not raised: the other sites count
            errors.append(f"manifest unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    last = frames[-1].date if frames else None
    out.update(
        frames=len(frames),
        last_clear_frame=last,
        last_clear_frame_age_days=(now.date() - dt.date.fromisoformat(last)).days if last else None,
    )
    try:
        state = load_state(st, site_id)
        out.update(alert_state=state.status, alert_level=LEVELS[state.level], **alert_view(state, now.date()))
    except Exception as exc:  # noqa: BLE001 - as above
        out.update(alert_state="unknown", alert_level="unknown", blind=None, last_confident_frame=None)
        errors.append(f"alert state unreadable: {exc}")
    pending = outbox(st, site_id)
    out["outbox"] = len(pending)
    lock = doc(keys.lock(site_id))
    held = False
    if lock:
        try:
            at = dt.datetime.fromisoformat(str(lock.get("renewed_at") or lock.get("since")))
            held = (now - at).total_seconds() < float(lock.get("ttl_s", lease_ttl_s()))
        except (TypeError, ValueError):
            held = False
    out["lock"] = (
        {"held": held, "owner": (lock or {}).get("owner"), "since": (lock or {}).get("since")}
        if lock
        else {"held": False}
    )
    delivery = next(
        (f"delivery {c}: {v.get('last_error')}" for e in pending for c, v in e.channels.items() if v.get("last_error")),
        None,
    )
    last_error = (
        status.get("last_error") or (published or {}).get("error") or (errors[0] if errors else None) or delivery
    )
    out["last_error"] = last_error
    if status.get("outcome") not in (None, "ok") or errors or (published or {}).get("status") == "error":
        health = "error"
    elif checked_age is None:
        health = "never checked"
    elif checked_age > stale_hours * 3600:
        health = "stale"
    else:
        health = "ok"
    out["health"] = health
    return out


def alert_view(state: Any, today: dt.date) -> dict[str, Any]:
    """What the alert rules see of the site now: the last confident frame, whether the site is blind (no confident
    frame for the rules' stale_days: monsoon, snow; growth meanwhile is seen only at the next clear frame), and growth
    seen on one frame that waits for a second to agree (not notified yet). Default rules' stale_days: the store does
    not hold the site's own rules."""
    view = site_status(state, today.isoformat())
    return {
        "last_confident_frame": view["last_clear"],
        "days_since_confident": view["days_since_clear"],
        "blind": view["stale"] and view["last_clear"] is not None,
        "blind_note": view["note"] if view["stale"] and view["last_clear"] is not None else "",
        "pending_growth": view["pending"],
    }
