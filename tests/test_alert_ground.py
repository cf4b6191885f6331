"""New ground outside the scar's footprint (features + the series rows), and one alert-and-notify tick end to end
through the runner's stages with a real SMTP server on loopback: notified exactly once, re-runs send nothing."""

import datetime as dt
import json

import numpy as np
import pytest
from aiosmtpd.controller import Controller

from scarmon.store import keys
from scarmon.tracking.features import Observation, footprint_frames, new_ground
from tests.test_notify import Sink, free_port


def disk(shape, r0, c0, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - r0) ** 2 + (cc - c0) ** 2 <= radius**2


def test_new_ground_where_it_grew_and_what_was_lost():
    shape = (200, 200)
    footprint = disk(shape, 100, 80, 30) | disk(shape, 100, 40, 12)  # core and a western lobe
    mask = disk(shape, 100, 80, 30) | disk(shape, 100, 150, 15)  # lobe revegetated, a zone opened east
    g = new_ground(mask, footprint, pixel_m=2.0)
    zone = disk(shape, 100, 150, 15).sum() * 4.0
    lobe = (disk(shape, 100, 40, 12) & ~disk(shape, 100, 80, 30)).sum() * 4.0
    assert abs(g["new_ground_m2"] - zone) / zone < 0.05
    assert abs(g["lost_ground_m2"] - lobe) / lobe < 0.25  # the 1-px margin shaves the rim
    assert 80 <= g["new_ground_azimuth_deg"] <= 100  # east (clockwise from north)
    assert 100 < g["new_ground_distance_m"] < 200
    # the same scar one pixel wider all round (boundary flicker) is no new ground
    wobble = new_ground(disk(shape, 100, 80, 31), disk(shape, 100, 80, 30), pixel_m=2.0)
    assert wobble["new_ground_m2"] == 0.0 and "new_ground_azimuth_deg" not in wobble
    assert new_ground(mask, None, pixel_m=2.0) == {}


def test_footprint_frames_pick_confident_frames_near_each_lag():
    d0 = dt.date(2021, 1, 1)
    dates = [(d0 + dt.timedelta(days=5 * i)).isoformat() for i in range(100)]
    usable = [i % 7 != 3 for i in range(100)]
    i = 90  # 450 days in
    refs = footprint_frames(dates, usable, i)
    day = dt.date.fromisoformat(dates[i])
    lags = sorted((day - dt.date.fromisoformat(dates[j])).days for j in refs)
    assert all(usable[j] for j in refs) and len(refs) == 4
    for lag, got in zip((90, 180, 270, 365), lags, strict=True):
        assert abs(got - lag) <= 5
    assert footprint_frames(dates, usable, 10) == []  # 50 days: no footprint yet
    assert all((day - dt.date.fromisoformat(dates[j])).days >= 60 for j in footprint_frames(dates, usable, i))


def test_series_rows_carry_new_ground_from_stored_masks(tmp_path):
    """write_series's helper measures each frame against the union of its footprint frames' stored masks."""
    from scarmon.grid import SiteGrid
    from scarmon.ingest.frames import encode_cog
    from scarmon.store.backends import LocalStore
    from scarmon.store.sequence import FrameEntry
    from scarmon.tracking.pipeline import _with_ground

    store = LocalStore(tmp_path)
    grid = SiteGrid(32647, 2.0, 470000.0, 3440000.0, 120, 120)
    shape = (120, 120)
    d0 = dt.date(2022, 1, 1)
    frames, rows = [], []
    for i in range(30):  # every 10 days; a zone opens at frame 25
        d = (d0 + dt.timedelta(days=10 * i)).isoformat()
        f = FrameEntry(d, f"S{i:02d}", f"{d}T04:00:00Z", (f"I{i}",), "05.00", 1.0, 1.0)
        m = disk(shape, 60, 50, 20) | (disk(shape, 60, 100, 10) if i >= 25 else np.zeros(shape, bool))
        store.put(keys.mask("s", f), encode_cog(m.astype(np.uint8), grid, nodata=None, description="scar"))
        frames.append(f)
        rows.append(Observation(d, f.scene_id, float(m.sum()) * 4.0, 1.0))
    out = _with_ground(store, "s", frames, rows, 2.0, fresh={r.scene_id for r in rows})
    assert all(r.new_ground_m2 is None for r in out[:6])  # under 60 days: no footprint
    assert [r.new_ground_m2 for r in out[6:25]] == [0.0] * 19
    zone = disk(shape, 60, 100, 10).sum() * 4.0
    assert all(abs(r.new_ground_m2 - zone) / zone < 0.05 for r in out[25:])
    assert all(80 <= r.new_ground_azimuth_deg <= 100 for r in out[25:])
    assert set(Observation.__dataclass_fields__) >= {"new_ground_m2", "lost_ground_m2", "new_ground_azimuth_deg"}


@pytest.fixture
def smtp():
    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield sink, ctl
    ctl.stop()


def test_alert_and_notify_tick_end_to_end_with_smtp(tmp_path, smtp):
    """The runner's alert and notify stages over a stored series: nothing before the failure, one e-mail when it is
    confirmed (the second clear frame), nothing more on a re-run or the next tick."""
    from scarmon.alerts.history import read_history
    from scarmon.alerts.notify import SmtpSettings
    from scarmon.service.runner import alert_stage, notify_stage
    from scarmon.site import parse_site
    from scarmon.store.backends import LocalStore
    from tests.alert_series import scenario, scenario_series
    from tests.test_site import GOOD

    sink, ctl = smtp
    site = parse_site({**GOOD, "recipients": {"email": ["ops@example.org"]}})
    store = LocalStore(tmp_path)
    scn = scenario("failure-cloudy-autumn")
    obs = scenario_series(scn, 1)
    rows = [{**o.__dict__} for o in obs]
    smtp_settings = SmtpSettings(host="127.0.0.1", port=ctl.port, sender="scarmon@test")

    def tick(n):
        store.put(keys.series_json(site.id), json.dumps(rows[:n]).encode())
        alert_stage(site, store)
        return notify_stage(site, store, smtp=smtp_settings)

    fail = scn.events[0].start
    before = sum(1 for o in obs if o.date < fail)
    tick(before)
    assert sink.messages == []
    clear_after = [i for i, o in enumerate(obs) if o.date >= fail and not o.low_confidence]
    tick(clear_after[0] + 1)  # first clear frame: silent
    assert sink.messages == []
    tick(clear_after[1] + 1)  # second: confirmed, e-mailed
    assert len(sink.messages) == 1
    ((rcpt, msg),) = sink.messages
    assert rcpt == ["ops@example.org"] and "ALARM" in msg["Subject"].upper()
    tick(clear_after[1] + 1)  # re-run: nothing new
    tick(clear_after[1] + 3)  # next ticks: no second e-mail
    assert len(sink.messages) == 1
    events = [r["event"] for r in read_history(store, site.id)]
    assert events.count("confirmed") == 1 and "provisional" in events
