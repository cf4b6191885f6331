"""The alert rules and the confirmation state machine on series shaped like the paper's sites."""

import json

import pytest

from scarmon.alerts.rules import LEVELS, AlertObservation, AlertState, detection_lags, replay, step
from scarmon.site import AlertRules
from tests.alert_series import BAIGE_EVENTS, SELA_EVENT, baige, sela, stable

CONFIRMING = ("confirmed", "escalated")


def kinds(events):
    return [(e.date, e.event, e.level) for e in events]


@pytest.mark.parametrize("seed", range(6))
def test_baige_creep_then_two_failures_three_weeks_apart(seed):
    obs = baige(seed)
    _, events = replay(obs, site="baige")
    # the creep (+53 % in a year) raises a watch before the failures
    assert any(e.event == "confirmed" and e.date < BAIGE_EVENTS[0] for e in events), kinds(events)
    for i, day in enumerate(BAIGE_EVENTS):
        until = BAIGE_EVENTS[i + 1] if i + 1 < len(BAIGE_EVENTS) else None
        first, confirmed = detection_lags(obs, events, day, until)
        assert first is not None and first <= 1, (day, kinds(events))
        assert confirmed is not None and confirmed <= 3, (day, kinds(events))
    assert max(LEVELS.index(e.level) for e in events if e.event in CONFIRMING) == LEVELS.index("alarm")


@pytest.mark.parametrize("seed", range(6))
def test_sela_flood_growth_then_contraction(seed):
    obs = sela(seed)
    state, events = replay(obs, site="sela")
    first, confirmed = detection_lags(obs, events, SELA_EVENT)
    assert first <= 1 and confirmed <= 3, kinds(events)
    assert [e for e in events if e.event in CONFIRMING][0].level in ("warning", "alarm")
    assert any(e.event in CONFIRMING and e.level == "alarm" for e in events)
    # the alert finishes once growth stops; the contraction raises nothing
    assert any(e.event == "finished" for e in events)
    last_finish = max(e.date for e in events if e.event == "finished")
    assert not [e for e in events if e.date > last_finish and e.event in ("provisional", *CONFIRMING)], kinds(events)
    assert state.status == "none"


@pytest.mark.parametrize("seed", range(10))
def test_stable_site_with_strong_seasonality_and_shadow_dips_never_confirms(seed):
    obs = stable(seed)
    assert max(o.area_m2 for o in obs) / min(o.area_m2 for o in obs) > 1.8  # the swing is real
    _, events = replay(obs, site="stable")
    assert not [e for e in events if e.event in CONFIRMING], kinds(events)


def test_unflagged_dips_and_spikes_are_not_confirmed():
    obs = stable(3, dip_flagged=False)
    _, events = replay(obs, site="stable")
    assert not [e for e in events if e.event in CONFIRMING], kinds(events)


def test_against_the_previous_frame_the_stable_site_would_alarm():
    """Why a baseline: frame-to-frame changes of the stable site exceed the watch threshold many times."""
    obs = stable(0)
    jumps = sum(1 for a, b in zip(obs, obs[1:]) if b.area_m2 > 1.25 * a.area_m2)
    assert jumps >= 3


def test_low_confidence_frames_never_confirm():
    obs = [o for o in sela(1) if o.date < SELA_EVENT]
    grown = [AlertObservation(f"2021-08-{d:02d}", f"S{d}", 100_000, low_confidence=True) for d in range(1, 31, 5)]
    state, events = replay(obs + grown, site="sela")
    assert [e.event for e in events] == ["provisional"]
    assert state.status == "provisional"
    # one clear frame is not enough either (≥ 2 of the next 4)
    state, events = step(prior=state, observation=AlertObservation("2021-09-02", "C1", 100_000))
    assert events == [] and state.status == "provisional"
    state, events = step(prior=state, observation=AlertObservation("2021-09-07", "C2", 100_000))
    assert [e.event for e in events] == ["confirmed"]


def test_detection_not_confirmed_is_reset():
    obs = [o for o in sela(2) if o.date < SELA_EVENT]
    base = obs[-1].area_m2
    extra = [AlertObservation("2021-08-01", "X0", base * 2.0)] + [
        AlertObservation(f"2021-08-{d:02d}", f"X{d}", base) for d in (6, 11, 16, 21)]
    state, events = replay(obs + extra, site="sela")
    assert [e.event for e in events] == ["provisional", "reset"]
    assert state.status == "none"


def test_warmup_and_thresholds_are_both_relative_and_absolute():
    small = [AlertObservation(f"2021-{m:02d}-01", f"S{m}", 2_000) for m in range(1, 13)]
    grown = [AlertObservation(f"2022-01-{d:02d}", f"G{d}", 2_900) for d in (1, 6, 11, 16)]  # +45 % but 900 m²
    _, events = replay(small + grown)
    assert events == []
    _, events = replay(small + grown, rules=AlertRules(watch={"pct": 25, "m2": 500}))
    assert "confirmed" in [e.event for e in events]
    # before the warm-up nothing is evaluated
    _, events = replay(small[:3] + [AlertObservation("2021-04-01", "B", 20_000)] * 3)
    assert events == []


def test_rerun_and_late_frames_emit_nothing():
    obs = sela(0)
    state, events = replay(obs, site="sela")
    again, more = replay(obs, site="sela", prior=state)
    assert more == [] and again == state
    late, more = step(prior=state, observation=AlertObservation("2020-02-01", "LATE", 1e6))
    assert more == [] and late == state


def test_state_round_trips_through_json_mid_alert():
    obs = baige(0)
    cut = next(i for i, o in enumerate(obs) if o.date > "2021-10-20")
    s1, e1 = replay(obs[:cut], site="baige")
    assert s1.status != "none"
    s1 = AlertState.from_dict(json.loads(json.dumps(s1.to_dict())))
    s2, e2 = replay(obs[cut:], prior=s1)
    full_state, full = replay(obs, site="baige")
    assert [e.to_dict() for e in e1 + e2] == [e.to_dict() for e in full]
    assert s2 == full_state


def test_events_carry_the_history_fields():
    _, events = replay(sela(0), site="sela")
    d = events[0].to_dict()
    for k in ("site", "date", "level", "state", "area_m2", "baseline_m2", "id"):
        assert d[k] not in (None, ""), k
    assert json.loads(json.dumps(d)) == d


def test_rules_from_site_file_validated():
    from scarmon.site import SiteError, parse_site
    from tests.test_site import GOOD

    site = parse_site({**GOOD, "alerts": {"warning": {"pct": 40, "m2": 3000}}, "recipients": {"email": ["a@b.org"]},
                       "schedule": "30 5 * * *"})
    assert site.alerts.warning.pct == 40 and site.alerts.watch.pct == 25 and site.schedule == "30 5 * * *"
    with pytest.raises(SiteError, match="levels must not decrease"):
        parse_site({**GOOD, "alerts": {"watch": {"pct": 80, "m2": 0}}})
    with pytest.raises(SiteError, match="alerts.thresholds"):
        parse_site({**GOOD, "alerts": {"thresholds": 3}})
    with pytest.raises(SiteError, match="not an e-mail"):
        parse_site({**GOOD, "recipients": {"email": ["nobody"]}})
    with pytest.raises(SiteError, match="cron"):
        parse_site({**GOOD, "schedule": "daily"})
    with pytest.raises(SiteError, match="recipients.password"):
        parse_site({**GOOD, "recipients": {"password": "x"}})
