import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from scarmon.cli import main
from scarmon.demo.synthetic import demo_site, generate_catalog
from tests.test_products_support import tracked_store_dir  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_help_documents_every_command():
    out = CliRunner().invoke(main, ["--help"]).output
    for cmd in ("ingest", "demo", "check-site", "site-schema"):
        assert cmd in out
    ingest_help = CliRunner().invoke(main, ["ingest", "--help"]).output
    for opt in ("--site", "--catalog", "--store", "--start", "--end", "--s3-endpoint"):
        assert opt in ingest_help


def test_bad_site_file_is_one_clear_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    site = demo_site()
    site["aoi"] = {"type": "Point", "coordinates": [96.0, 31.1]}
    bad.write_text(yaml.safe_dump(json.loads(json.dumps(site, default=str))))
    store = tmp_path / "store"
    result = CliRunner().invoke(
        main, ["ingest", "--site", str(bad), "--store", str(store), "--catalog", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 1
    assert f"{bad}: key 'aoi': must be a GeoJSON Polygon" in result.output
    assert not store.exists()


def test_ingest_command_reports_and_is_idempotent(tmp_path):
    site = demo_site()
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(json.loads(json.dumps(site, default=str))))
    items = generate_catalog(tmp_path / "cat", site, start="2022-01-01", end="2022-02-01")
    args = ["ingest", "--site", str(site_file), "--catalog", str(items), "--store", str(tmp_path / "store")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "appended" in first.output and "rejected" in first.output
    second = CliRunner().invoke(main, args)
    assert ", 0 appended, 0 rejected," in second.output


def test_check_site_on_shipped_sites():
    result = CliRunner().invoke(main, ["check-site", *map(str, sorted((ROOT / "sites").glob("*.yaml")))])
    assert result.exit_code == 0 and result.output.count(": ok: ") == 2


def test_unreachable_catalog_exit_code(tmp_path, monkeypatch, caplog):
    from scarmon import defaults

    monkeypatch.setattr(defaults, "HTTP_RETRIES", 1)
    monkeypatch.setattr(defaults, "HTTP_BACKOFF_S", 0.01)
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(json.loads(json.dumps(demo_site(), default=str))))
    result = CliRunner().invoke(
        main,
        ["ingest", "--site", str(site_file), "--catalog", "http://127.0.0.1:9/api", "--store", str(tmp_path / "s")],
    )
    assert result.exit_code == 1 and "http://127.0.0.1:9/api" in result.output and "Traceback" not in result.output
    # One line naming the URL and the OS error, not urllib3's nested repr; its retry warnings only with --verbose.
    assert "[Errno 111] Connection refused" in result.output and "ConnectionPool" not in result.output
    assert not [r for r in caplog.records if r.name.startswith("urllib3")]


def test_public_face_names_resolve():
    import scarmon

    for name in scarmon.__all__:
        assert getattr(scarmon, name) is not None, name


def test_status_answers_is_every_site_alive(tracked_store_dir, tmp_path):
    """`scarmon status`: a site that just ran is ok; a site whose lock is held, whose delivery fails and whose
    publish failed is reported with its last error; --json carries the same figures; exit 1 when any is not ok."""
    import datetime as dt

    from scarmon.alerts.history import enqueue, mark, outbox, save_state, update_entry
    from scarmon.alerts.rules import AlertEvent, AlertState
    from scarmon.products.publish import publish_failed
    from tests.test_products_support import N_FRAMES, build_site, copy_store, make_site, site_doc_at, write_site_file

    store = copy_store(tracked_store_dir, tmp_path / "store")
    site_file = write_site_file(tmp_path / "site.yaml")
    res = CliRunner().invoke(main, ["publish", "--site", str(site_file), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    one = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "store")])
    assert one.exit_code == 0, one.output
    assert "1 of 1 site(s) ok" in one.output and "test-slide" in one.output and "2023-05-31" in one.output

    # the alert rules last saw a confident frame on 2023-05-31: long blind since (as if the tiles stopped coming)
    save_state(store, "test-slide", AlertState(site="test-slide", status="confirmed", level=2, last_clear="2023-05-31"))
    build_site(store, n_frames=4, alerts=False, doc=site_doc_at("other-slide", "Other slide", 96.3, 30.8))
    now = dt.datetime.now(dt.UTC).isoformat()
    store.put("other-slide/lock.json", json.dumps({"owner": "host:123:abcd", "since": now, "ttl_s": 600}).encode())
    event = AlertEvent(
        site="other-slide",
        date="2021-07-25",
        scene_id="S2A_20210725_R033",
        event="confirmed",
        state="confirmed",
        level="alarm",
        area_m2=5000.0,
        baseline_m2=2000.0,
        baseline_kind="rolling",
        change_m2=3000.0,
        change_pct=150.0,
        alert_id="x",
        first_date="2021-07-25",
    )
    enqueue(store, "other-slide", event, ["email"])
    [entry] = outbox(store, "other-slide")
    mark(entry, "email", ok=False, error="SMTP 127.0.0.1:25: ConnectionRefusedError")
    update_entry(store, "other-slide", entry)
    publish_failed(store, make_site(site_doc_at("other-slide", "Other slide", 96.3, 30.8)), "disk full")

    res = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "store"), "--json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    assert doc["all_ok"] is False and [s["site"] for s in doc["sites"]] == ["other-slide", "test-slide"]
    o, t = doc["sites"]
    assert t["health"] == "ok" and t["last_tick_outcome"] == "ok" and t["last_tick_age_s"] < 600
    assert t["frames"] == N_FRAMES and t["last_clear_frame"] == "2023-05-31" and t["last_clear_frame_age_days"] > 900
    assert (t["alert_state"], t["alert_level"], t["outbox"], t["lock"]["held"]) == ("confirmed", "warning", 0, False)
    # the alert rules are blind since their last confident frame, and the table says so
    assert t["blind"] is True and t["last_confident_frame"] == "2023-05-31" and t["days_since_confident"] > 900
    assert "no confident frame for" in t["blind_note"] and o["blind"] is False  # other-slide: no alert state yet
    assert o["health"] == "error" and o["last_error"] == "disk full" and o["outbox"] == 1 and o["lock"]["held"]
    assert o["lock"]["owner"] == "host:123:abcd" and o["last_tick"] is None and o["frames"] == 4
    table = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "store")])
    assert table.exit_code == 1 and "1 of 2 site(s) ok; not ok: other-slide" in table.output
    line = next(ln for ln in table.output.splitlines() if ln.startswith("other-slide"))
    assert "error" in line and "held" in line and "disk full" in line and "never" in line
    line = next(ln for ln in table.output.splitlines() if ln.startswith("test-slide"))
    assert f"confirmed/warning, blind {t['days_since_confident']} d" in line
    # the same figures for monitoring systems, in status.json (written by every tick that publishes)
    status = json.loads(store.get("test-slide/status.json"))
    assert status["outcome"] == "ok" and status["last_error"] is None and status["last_frame_date"] == "2023-05-31"
    assert status["scarmon_version"] and status["last_frame_age_days"] == t["last_clear_frame_age_days"]
    # what the alert rules saw when it was written (the fixture's state knew no confident frame then)
    assert status["blind"] is False and status["last_confident_frame"] is None and status["pending_growth"] is None
    # only the sites of a folder; an empty store says what to check
    only = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "store"), "--sites", str(tmp_path), "--json"])
    assert [s["site"] for s in json.loads(only.output)["sites"]] == ["test-slide"]
    empty = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "nothing")])
    assert empty.exit_code == 1 and "no sites in" in empty.output and "Traceback" not in empty.output
    assert CliRunner().invoke(main, ["--version"]).output.startswith("scarmon, version ")


def test_check_site_says_where_and_warns_about_swapped_coordinates(tmp_path):
    from tests.test_products_support import site_doc_at, write_site_file

    chile = site_doc_at("chile-slide", "Chile slide", -70.5, -33.4)
    ok = CliRunner().invoke(main, ["check-site", str(write_site_file(tmp_path / "ok.yaml", chile))])
    assert ok.exit_code == 0, ok.output
    assert (
        "where: 33.40000° S, 70.50000° W (AOI centre); map: https://www.openstreetmap.org/?mlat=-33.400000" in ok.output
        and "warning" not in ok.output
    )

    # AOI and prompts written [lat, lon]: valid numbers, but the site would sit in Antarctica
    swapped = json.loads(json.dumps(chile))
    swapped["aoi"]["coordinates"] = [[[y, x] for x, y in swapped["aoi"]["coordinates"][0]]]
    for p in swapped["prompts"]:
        p["lon"], p["lat"] = p["lat"], p["lon"]
    res = CliRunner().invoke(main, ["check-site", str(write_site_file(tmp_path / "swapped.yaml", swapped))])
    assert res.exit_code == 0, res.output
    assert "warning: the AOI lies at latitude -70.5000, outside Sentinel-2's coverage" in res.output
    assert "with lon and lat swapped it would be at 33.4000° S, 70.5000° W" in res.output

    # only the prompts swapped: an error naming the prompt, and a hint
    bad = json.loads(json.dumps(chile))
    for p in bad["prompts"]:
        p["lon"], p["lat"] = p["lat"], p["lon"]
    res = CliRunner().invoke(main, ["check-site", str(write_site_file(tmp_path / "bad.yaml", bad))])
    assert res.exit_code == 1 and "lies outside the aoi polygon" in res.output
    assert "hint: prompts [0, 1] lie inside the AOI with lon and lat swapped" in res.output

    # a prompt at the AOI's edge
    edge = json.loads(json.dumps(chile))
    ring = edge["aoi"]["coordinates"][0]
    edge["prompts"][1]["lon"] = max(x for x, _ in ring) - 0.00003
    res = CliRunner().invoke(main, ["check-site", str(write_site_file(tmp_path / "edge.yaml", edge))])
    assert res.exit_code == 0 and "warning: prompts[1] lies 3 m from the AOI's edge" in res.output


def test_status_says_blind_only_after_stale_days_without_a_confident_frame():
    import datetime as dt

    from scarmon.alerts.rules import AlertRules, AlertState
    from scarmon.service.health import alert_view

    today = dt.date(2026, 12, 1)
    stale = AlertRules().stale_days
    recent = alert_view(AlertState(site="s", last_clear=str(today - dt.timedelta(days=stale - 1))), today)
    old = alert_view(AlertState(site="s", last_clear=str(today - dt.timedelta(days=stale))), today)
    never = alert_view(AlertState(site="s"), today)
    assert (recent["blind"], recent["days_since_confident"]) == (False, stale - 1) and not recent["blind_note"]
    assert (old["blind"], old["days_since_confident"]) == (True, stale) and f"for {stale} days" in old["blind_note"]
    assert never["blind"] is False and never["last_confident_frame"] is None  # nothing tracked yet: not blind


def test_status_json_carries_the_alert_view_and_survives_an_unreadable_alert_state(tmp_path):
    from scarmon.alerts.history import save_state
    from scarmon.alerts.rules import AlertRules, AlertState
    from scarmon.service.runner import TickReport, write_status
    from scarmon.store.backends import LocalStore
    from tests.test_products_support import make_site

    store, site = LocalStore(tmp_path), make_site()
    save_state(store, site.id, AlertState(site=site.id, last_clear="2020-01-01"))
    write_status(site, store, TickReport(site.id))
    doc = json.loads(store.get(f"{site.id}/status.json"))
    assert doc["blind"] is True and doc["last_confident_frame"] == "2020-01-01"
    assert doc["days_since_confident"] >= AlertRules().stale_days and "no confident frame" in doc["blind_note"]
    store.put(f"{site.id}/alerts/state.json", b"{not json")  # a failed tick is still recorded, saying why
    write_status(site, store, TickReport(site.id, status="failed", message="boom"))
    doc = json.loads(store.get(f"{site.id}/status.json"))
    assert doc["outcome"] == "failed" and doc["blind"] is None and "state.json unreadable" in doc["alert_view_error"]
