import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from scarmon.cli import main
from scarmon.demo.synthetic import demo_site, generate_catalog

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
    result = CliRunner().invoke(main, ["ingest", "--site", str(bad), "--store", str(store), "--catalog", str(tmp_path / "x.json")])
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


def test_unreachable_catalog_exit_code(tmp_path, monkeypatch):
    from scarmon import defaults

    monkeypatch.setattr(defaults, "HTTP_RETRIES", 0)
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(json.loads(json.dumps(demo_site(), default=str))))
    result = CliRunner().invoke(main, ["ingest", "--site", str(site_file), "--catalog", "http://127.0.0.1:9/api",
                                       "--store", str(tmp_path / "s")])
    assert result.exit_code == 1 and "http://127.0.0.1:9/api" in result.output and "Traceback" not in result.output


def test_public_face_names_resolve():
    import scarmon

    for name in scarmon.__all__:
        assert getattr(scarmon, name) is not None, name
