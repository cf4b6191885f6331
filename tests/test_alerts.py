"""The alert rules and the confirmation state machine on series shaped like the paper's sites and on the issue-9
scenarios (tests/alert_series.py): noise-scaled steps, the CUSUM, new ground, evidence-weighted confirmation, blind
periods, state migration."""

import datetime as dt
import importlib.util
import json
import math
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from scarmon.alerts.rules import (
    LEVELS,
    AlertObservation,
    AlertState,
    detection_lags,
    noise_sigma,
    quality_factor,
    replay,
    seasonal_amplitude,
    seasonal_term,
    site_status,
    step,
)
from scarmon.site import AlertRules
from tests.alert_series import BAIGE_EVENTS, SCENARIOS, SELA_EVENT, baige, scenario, scenario_series, sela, stable

CONFIRMING = ("confirmed", "escalated")
DETECTING = ("provisional", "escalating", "confirmed", "escalated")


def kinds(events):
    return [(e.date, e.event, e.level) for e in events]


def flat(n, *, area=100_000.0, start="2022-01-01", every=5, noise=0.01, seed=0, clear=1.0):
    """n clear frames of a constant scar with white noise, no seasonality."""
    rng = random.Random(seed)
    d0 = dt.date.fromisoformat(start)
    return [
        AlertObservation(
            (d0 + dt.timedelta(days=every * i)).isoformat(),
            f"F{i}",
            area * (1 + rng.gauss(0, noise)),
            clear_fraction=clear,
            scar_clear_fraction=clear,
        )
        for i in range(n)
    ]


def after(obs, n, factor, *, every=5, low=False, clear=1.0, tag="G", **kw):
    """n frames after the last of `obs` at `factor` x its median area."""
    base = sorted(o.area_m2 for o in obs)[len(obs) // 2]
    d0 = dt.date.fromisoformat(obs[-1].date)
    return [
        AlertObservation(
            (d0 + dt.timedelta(days=every * (i + 1))).isoformat(),
            f"{tag}{i}",
            base * factor,
            low_confidence=low,
            clear_fraction=clear,
            scar_clear_fraction=clear,
            **kw,
        )
        for i in range(n)
    ]


NO_SEASON = AlertRules(season_amplitude=0.0)


# --- the paper's sites ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_baige_creep_then_two_failures_three_weeks_apart(seed):
    obs = baige(seed)
    _, events = replay(obs, site="baige")
    # the creep (+53 % in a year) raises a confirmed watch before the failures
    assert any(e.event == "confirmed" and e.date < BAIGE_EVENTS[0] for e in events), kinds(events)
    for day in BAIGE_EVENTS:
        first, confirmed = detection_lags(obs, events, day)
        # silent until a second frame agrees: first detection and notification by the 2nd clear acquisition
        assert first is not None and first <= 2, (day, kinds(events))
        assert confirmed is not None and confirmed <= 2, (day, kinds(events))
    assert max(LEVELS.index(e.level) for e in events if e.event in CONFIRMING) == LEVELS.index("alarm")


@pytest.mark.parametrize("seed", range(6))
def test_sela_flood_growth_then_contraction(seed):
    obs = sela(seed)
    state, events = replay(obs, site="sela")
    first, confirmed = detection_lags(obs, events, SELA_EVENT)
    assert first <= 2 and confirmed <= 2, kinds(events)
    assert any(e.event in CONFIRMING and e.level == "alarm" for e in events)
    # the alert finishes once growth stops; the contraction raises nothing
    assert any(e.event == "finished" for e in events)
    last_finish = max(e.date for e in events if e.event == "finished")
    assert not [e for e in events if e.date > last_finish and e.event in DETECTING], kinds(events)
    assert state.status == "none"


@pytest.mark.parametrize("seed", range(10))
def test_stable_site_with_strong_seasonality_and_shadow_dips_raises_nothing(seed):
    obs = stable(seed)
    assert max(o.area_m2 for o in obs) / min(o.area_m2 for o in obs) > 1.8  # the swing is real
    _, events = replay(obs, site="stable")
    assert events == [], kinds(events)


def test_unflagged_dips_and_spikes_raise_nothing():
    obs = stable(3, dip_flagged=False)
    _, events = replay(obs, site="stable")
    assert events == [], kinds(events)


def test_against_the_previous_frame_the_stable_site_would_alarm():
    """Why a baseline: frame-to-frame changes of the stable site exceed the watch threshold many times."""
    obs = stable(0)
    jumps = sum(1 for a, b in zip(obs, obs[1:], strict=False) if b.area_m2 > 1.25 * a.area_m2)
    assert jumps >= 3


# --- noise, season, baseline ---------------------------------------------------------------------------------------


def test_noise_is_measured_from_successive_frames_and_blended_from_the_prior():
    obs = flat(60, noise=0.03, seed=4)
    hist = tuple((o.date, o.area_m2) for o in obs)
    sd = noise_sigma(hist, amplitude=0.0, peak_doy=200, prior=0.05, floor=0.005, min_pairs=8)
    assert 0.022 < sd < 0.04
    quiet = tuple((o.date, o.area_m2) for o in flat(60, noise=0.004, seed=4))
    assert noise_sigma(quiet, amplitude=0.0, peak_doy=200, prior=0.05, floor=0.015, min_pairs=8) == 0.015
    few = quiet[:3]  # two pairs: mostly the prior
    assert noise_sigma(few, amplitude=0.0, peak_doy=200, prior=0.05, floor=0.005, min_pairs=8) > 0.04


def test_seasonal_amplitude_from_the_frames_robust_to_a_failure_and_shrunk_to_the_prior_early():
    d0 = dt.date(2021, 1, 1)
    rng = random.Random(1)
    hist = []
    for i in range(0, 365, 5):
        d = (d0 + dt.timedelta(days=i)).isoformat()
        step_ = 2.0 if i > 200 else 1.0  # a failure half-way must not pose as seasonality
        hist.append((d, 50_000 * step_ * math.exp(seasonal_term(d, 0.3, 200)) * (1 + rng.gauss(0, 0.01))))
    kw = dict(peak_doy=200, prior=0.15, prior_weight=0.03, max_amplitude=0.45)
    assert abs(seasonal_amplitude(hist, **kw) - 0.3) <= 0.04
    assert abs(seasonal_amplitude(hist[:4], **kw) - 0.15) <= 0.03  # 15 days say little about a season


def test_season_error_large_for_an_unseen_season_small_once_the_swing_is_seen():
    from scarmon.alerts.rules import season_error

    def hist(start, days):
        d0 = dt.date.fromisoformat(start)
        return [((d0 + dt.timedelta(days=i)).isoformat(), 1e5) for i in range(0, days, 5)]

    rules = AlertRules()
    summer_only = season_error(hist("2022-07-01", 100), "2022-12-01", rules, 0.15, 0.015)
    half_cycle = season_error(hist("2022-01-01", 170), "2022-07-15", rules, 0.15, 0.015)
    assert summer_only > 0.015 and half_cycle < summer_only / 2


@pytest.mark.parametrize("seed", range(1, 13))
def test_first_autumn_of_a_site_monitored_since_summer_raises_no_notification(seed):
    _, ev = replay(scenario_series(scenario("stable-summer-start"), seed))
    assert not [e for e in ev if e.event in CONFIRMING], kinds(ev)


@pytest.mark.parametrize("seed", range(3))
def test_a_steady_noisy_site_is_not_alerted_and_a_quiet_one_is_alerted_for_the_same_step(seed):
    """The same +15 % held for 4 frames: 5 noise sd on a quiet site (alerted), 2.5 on a noisy one (weak evidence)."""
    quiet = flat(30, noise=0.01, seed=seed)
    _, ev = replay(quiet + after(quiet, 4, 1.15), rules=NO_SEASON)
    assert "confirmed" in [e.event for e in ev], kinds(ev)
    assert ev[0].level == "watch" and ev[0].change_pct < 25  # below the fixed watch threshold
    noisy = flat(30, noise=0.06, seed=seed)
    _, ev = replay(noisy + after(noisy, 1, 1.15), rules=NO_SEASON)
    assert ev == [], kinds(ev)


def test_no_blind_first_year_but_a_short_warm_up():
    obs = flat(8, noise=0.01)  # 35 days of history
    _, ev = replay(obs + after(obs, 2, 2.0), rules=NO_SEASON)
    assert [e.event for e in ev] == ["provisional", "confirmed"], kinds(ev)
    state, ev = replay(obs[:2] + after(obs[:2], 2, 2.0), rules=NO_SEASON)  # 20 days, 4 frames: warm-up
    assert ev == [] and state.candidate is None


def test_thresholds_are_both_relative_and_absolute():
    small = flat(40, area=2_000.0, noise=0.005)
    grown = after(small, 4, 1.45)  # +45 % but 900 m²
    _, events = replay(small + grown, rules=NO_SEASON)
    assert events == []
    _, events = replay(small + grown, rules=AlertRules(season_amplitude=0.0, watch={"pct": 25, "m2": 500}))
    assert "confirmed" in [e.event for e in events]


# --- sustained growth (CUSUM) ----------------------------------------------------------------------------------------


def test_cusum_sees_sustained_growth_below_the_single_frame_threshold():
    rules = AlertRules(season_amplitude=0.0, noise_floor=0.03)  # a site credited with 3 % noise
    obs = flat(40, noise=0.003, seed=2)
    grown = after(obs, 7, 1.11)  # +11 %: 3.5 sd, under the 4 sd of one frame
    _, ev = replay(obs + grown, rules=rules)
    first = next(e for e in ev if e.event == "provisional")
    assert first.extra["rule"] == "trend" and first.change_pct < 25 and first.extra["score_sigma"] < 4
    assert "confirmed" in [e.event for e in ev]
    # without the CUSUM (decision level out of reach) the same frames raise nothing
    assert replay(obs + grown, rules=AlertRules(season_amplitude=0.0, noise_floor=0.03, cusum_h=1e9))[1] == []


def test_a_single_capped_frame_cannot_trigger_the_cusum():
    obs = flat(40, noise=0.01, seed=5)
    spike = after(obs, 1, 1.5)
    back = after(obs + spike, 4, 1.0, tag="B")
    state, ev = replay(obs + spike + back, rules=NO_SEASON)
    assert ev == [] and state.cusum < AlertRules().cusum_h


# --- evidence-weighted confirmation --------------------------------------------------------------------------------


def test_strong_clean_step_confirmed_at_the_second_clear_frame():
    obs = flat(40, noise=0.01)
    s, ev = replay(obs + after(obs, 1, 2.0), rules=NO_SEASON)
    assert ev == [] and s.candidate is not None  # one frame: silent, held in the state
    assert site_status(s, s.last[0])["pending"]["first_date"] == s.candidate.date
    s, ev = replay(obs + after(obs, 2, 2.0), rules=NO_SEASON)
    assert [e.event for e in ev] == ["provisional", "confirmed"]
    assert ev[1].extra["evidence"] >= AlertRules().confirm_evidence


def test_partly_clouded_evidence_needs_more_frames():
    obs = flat(40, noise=0.01)
    cloudy = after(obs, 3, 2.0, clear=0.92)
    assert quality_factor(0.92) < 0.75
    _, ev = replay(obs + cloudy[:2], rules=NO_SEASON)
    assert [e.event for e in ev] == ["provisional"]
    _, ev = replay(obs + cloudy, rules=NO_SEASON)
    assert [e.event for e in ev] == ["provisional", "confirmed"]


def test_low_confidence_frames_never_confirm_nor_open_an_alert():
    obs = flat(40, noise=0.01)
    low = after(obs, 6, 2.0, low=True)
    state, events = replay(obs + low, rules=NO_SEASON)
    assert events == [] and state.status == "none" and state.candidate is not None
    state, events = step(prior=state, observation=after(obs + low, 1, 2.0, tag="C")[0], rules=NO_SEASON)
    assert events == []  # one clear frame: still silent
    state, events = step(prior=state, observation=after(obs + low, 2, 2.0, tag="C")[1], rules=NO_SEASON)
    assert [e.event for e in events] == ["provisional", "confirmed"]
    assert events[0].first_date == low[0].date  # first seen on the low-confidence frame


def test_frames_low_only_for_clouds_elsewhere_in_the_aoi_count_when_the_scar_was_clear():
    from scarmon.alerts.rules import usable

    aoi = AlertObservation(
        "2022-01-01",
        "A",
        1.0,
        low_confidence=True,
        scar_clear_fraction=1.0,
        low_confidence_reason="clear fraction 0.86 < 0.90",
    )
    assert usable(aoi)
    assert not usable(replace(aoi, scar_clear_fraction=0.95))
    assert not usable(
        replace(aoi, low_confidence_reason="clear fraction 0.86 < 0.90; held new area of 20% of the scar")
    )
    assert not usable(replace(aoi, low_confidence_reason="12% of the scar under cloud, shadow or snow"))
    obs = flat(40, noise=0.01)
    grown = after(obs, 2, 2.0, low=True, clear=1.0, low_confidence_reason="clear fraction 0.85 < 0.90")
    assert [e.event for e in replay(obs + grown, rules=NO_SEASON)[1]] == ["provisional", "confirmed"]


def test_single_overshoot_frames_raise_no_event_at_all():
    for seed in (1, 3):
        _, ev = replay(scenario_series(scenario("overshoots"), seed))
        assert ev == [], kinds(ev)


def test_contradicted_provisional_is_reset_and_never_confirmed():
    obs = flat(40, noise=0.01)
    two = after(obs, 2, 1.6, clear=0.91)  # weak, partly clouded: provisional, not confirmed
    back = after(obs + two, 3, 1.0, tag="B")
    state, events = replay(obs + two + back, rules=NO_SEASON)
    assert [e.event for e in events] == ["provisional", "reset"], kinds(events)
    assert state.status == "none"


# --- new ground ------------------------------------------------------------------------------------------------------


def test_new_ground_alerts_when_revegetation_keeps_the_total_flat():
    obs = flat(40, noise=0.01, area=300_000.0)
    obs = [replace(o, new_ground_m2=1_000.0 + 200 * (i % 3), lost_ground_m2=1_500.0) for i, o in enumerate(obs)]
    moved = after(
        obs,
        4,
        1.02,
        new_ground_m2=90_000.0,
        lost_ground_m2=85_000.0,
        new_ground_azimuth_deg=95.0,
        new_ground_distance_m=410.0,
    )
    _, ev = replay(obs + moved, rules=NO_SEASON)
    assert [e.event for e in ev][:2] == ["provisional", "confirmed"], kinds(ev)
    assert ev[0].extra["rule"] == "new ground" and ev[0].extra["new_ground_azimuth_deg"] == 95.0
    assert "towards E (95°)" in ev[0].reason and "410 m" in ev[0].reason
    # the same total without the footprint columns: nothing to see
    plain = [replace(o, new_ground_m2=None, lost_ground_m2=None) for o in obs + moved]
    assert replay(plain, rules=NO_SEASON)[1] == []
    # new ground that the total's growth explains (nothing lost) is left to the area rules: a +2 % total is no alert
    grown = [replace(o, lost_ground_m2=1_000.0) for o in moved]
    assert replay(obs + grown, rules=NO_SEASON)[1] == []


def test_ground_lost_long_ago_hides_nothing_new():
    """A lobe that revegetated months ago stays in last year's footprint as lost ground; new ground appearing now
    (the seasonal expansion of a young zone) is not a hidden new zone."""
    obs = flat(40, noise=0.01, area=300_000.0)
    obs = [replace(o, new_ground_m2=1_000.0, lost_ground_m2=85_000.0) for o in obs]  # lost long ago, steady
    more = after(obs, 4, 1.02, new_ground_m2=60_000.0, lost_ground_m2=86_000.0)
    assert replay(obs + more, rules=NO_SEASON)[1] == []
    fresh = after(obs, 4, 1.02, new_ground_m2=60_000.0, lost_ground_m2=150_000.0)  # lost now: hidden zone
    assert "confirmed" in [e.event for e in replay(obs + fresh, rules=NO_SEASON)[1]]


def test_new_zone_scenario_is_notified_inside_its_window():
    scn = scenario("failure-then-new-zone")
    obs = scenario_series(scn, 1)
    _, ev = replay(obs)
    zone = scn.events[1]
    hits = [e for e in ev if e.event in CONFIRMING and zone.start <= e.date <= "2022-07-31"]
    assert hits, kinds(ev)


# --- blind periods, status -------------------------------------------------------------------------------------------


def test_first_clear_frame_after_a_blind_period_says_so():
    obs = flat(40, noise=0.01)
    state, _ = replay(obs, rules=NO_SEASON)
    last = dt.date.fromisoformat(obs[-1].date)
    assert not site_status(state, (last + dt.timedelta(days=10)).isoformat())["stale"]
    blind = site_status(state, (last + dt.timedelta(days=45)).isoformat())
    assert blind["stale"] and "45 days" in blind["note"]
    base = sorted(o.area_m2 for o in obs)[20]
    gap = [AlertObservation((last + dt.timedelta(days=d)).isoformat(), f"N{d}", base * 1.8) for d in (55, 60)]
    _, ev = replay(obs + gap, rules=NO_SEASON)
    first = next(e for e in ev if e.event == "provisional")
    assert first.extra["blind_days"] == 55 and "after 55 days without a confident frame" in first.reason
    # the level before the gap is the baseline
    assert abs(first.baseline_m2 - base) / base < 0.03


# --- the issue-9 scenarios, tuned seed ----------------------------------------------------------------------------------


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "alerts_bench.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("alerts_bench", path)
    mod = sys.modules.get("alerts_bench")
    if mod is None:
        mod = importlib.util.module_from_spec(spec)
        sys.modules["alerts_bench"] = mod
        spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_targets_on_the_tuned_seed(name):
    """Seed 1 (the one the rules were tuned on): every event notified in its window, failures by the 2nd clear
    acquisition, no false notification and no first detection outside an event; gradual growth first seen within
    30 days of +10 % (the monsoon growth under 70 % cloud: within 35 days, see the benchmark)."""
    bench = _bench()
    scn = scenario(name)
    obs = scenario_series(scn, 1)
    r = bench.evaluate(scn, obs, "new")
    assert (r.missed, r.false, r.false_first, r.late_steps) == (0, 0, 0, 0), r.rows
    limit = 35 if name == "monsoon-short-history" else 30
    for row, e in zip(r.rows, scn.events, strict=True):
        if e.kind == "gradual":
            assert row[5] and int(row[5].split()[0]) <= limit, row


def test_old_rules_miss_what_the_new_ones_catch():
    """The benchmark's reference columns run: the old rules miss the short-history monsoon growth."""
    bench = _bench()
    scn = scenario("monsoon-short-history")
    assert bench.evaluate(scn, scenario_series(scn, 1), "old").missed == 1


# --- idempotence, persistence --------------------------------------------------------------------------------------


def test_rerun_and_late_frames_emit_nothing():
    obs = sela(0)
    state, events = replay(obs, site="sela")
    again, more = replay(obs, site="sela", prior=state)
    assert more == [] and again == state
    late, more = step(prior=state, observation=AlertObservation("2020-02-01", "LATE", 1e6))
    assert more == [] and late == state


def test_state_round_trips_through_json_mid_alert():
    obs = baige(0)
    cut = next(i for i, o in enumerate(obs) if o.date > "2021-11-20")
    s1, e1 = replay(obs[:cut], site="baige")
    assert s1.status != "none"
    s1 = AlertState.from_dict(json.loads(json.dumps(s1.to_dict())))
    s2, e2 = replay(obs[cut:], prior=s1)
    full_state, full = replay(obs, site="baige")
    assert [e.to_dict() for e in e1 + e2] == [e.to_dict() for e in full]
    assert s2 == full_state


def test_version_1_state_loads_and_continues():
    """A state stored by the rules before issue 9 (no CUSUM, ground, evidence) loads, says it was migrated, and a
    pending version-1 confirmation keeps the agreement it had."""
    obs = flat(40, noise=0.01)
    v1 = {
        "site": "s",
        "status": "provisional",
        "level": 2,
        "alert_id": "2022-06-01_X",
        "baseline_m2": 100000.0,
        "baseline_kind": "rolling 365 d",
        "candidate": {
            "date": "2022-06-01",
            "scene_id": "X",
            "ref_m2": 100000.0,
            "level": 2,
            "votes": [2],
            "by_level": False,
        },
        "calm": 0,
        "detected_m2": 180000.0,
        "history": [[o.date, o.area_m2] for o in obs],
        "episode": [["2022-06-01", 180000.0]],
        "acknowledged": None,
        "last": ["2022-06-01", "X"],
        "observations": 41,
        "version": 1,
        "level_name": "warning",
    }
    state = AlertState.from_dict(v1)
    assert state.note.startswith("migrated from state version 1") and state.candidate.evidence == 1.0
    state, ev = step(prior=state, observation=AlertObservation("2022-06-06", "Y", 180_000.0), rules=NO_SEASON)
    assert [e.event for e in ev] == ["confirmed"]


def test_events_carry_the_history_fields():
    _, events = replay(sela(0), site="sela")
    d = events[0].to_dict()
    for k in ("site", "date", "level", "state", "area_m2", "baseline_m2", "id"):
        assert d[k] not in (None, ""), k
    for k in ("rule", "noise_pct", "score_sigma", "evidence"):
        assert k in d["extra"], k
    assert json.loads(json.dumps(d)) == d


def test_rules_from_site_file_validated():
    from scarmon.site import SiteError, parse_site
    from tests.test_site import GOOD

    site = parse_site(
        {
            **GOOD,
            "alerts": {"warning": {"pct": 40, "m2": 3000}, "season_amplitude": 0.2, "detect_sigma": 5},
            "recipients": {"email": ["a@b.org"]},
            "schedule": "30 5 * * *",
        }
    )
    assert site.alerts.warning.pct == 40 and site.alerts.watch.pct == 25 and site.schedule == "30 5 * * *"
    assert site.alerts.season_amplitude == 0.2 and site.alerts.detect_sigma == 5
    with pytest.raises(SiteError, match="levels must not decrease"):
        parse_site({**GOOD, "alerts": {"watch": {"pct": 80, "m2": 0}}})
    with pytest.raises(SiteError, match="alerts.thresholds"):
        parse_site({**GOOD, "alerts": {"thresholds": 3}})
    with pytest.raises(SiteError, match="season_amplitude"):
        parse_site({**GOOD, "alerts": {"season_amplitude": 3}})
    with pytest.raises(SiteError, match="not an e-mail"):
        parse_site({**GOOD, "recipients": {"email": ["nobody"]}})
    with pytest.raises(SiteError, match="cron"):
        parse_site({**GOOD, "schedule": "daily"})
    with pytest.raises(SiteError, match="recipients.password"):
        parse_site({**GOOD, "recipients": {"password": "x"}})
