from pathlib import Path

import pytest

from scarmon.site import SiteError, load_site, parse_site

ROOT = Path(__file__).resolve().parents[1]

GOOD = dict(
    id="demo-1",
    aoi={
        "type": "Polygon",
        "coordinates": [[[98.69, 31.07], [98.72, 31.07], [98.72, 31.10], [98.69, 31.10], [98.69, 31.07]]],
    },
    prompts=[{"lon": 98.70, "lat": 31.08, "label": 1, "date": "2020-01-01"}],
)


def with_(**changes):
    return {**GOOD, **changes}


@pytest.mark.parametrize("path", sorted((ROOT / "sites").glob("*.yaml")))
def test_shipped_sites_load(path):
    site = load_site(path)
    assert site.id == path.stem
    assert 5 < site.polygon.area * 111 * 95 < 20  # ~3x3 km


def test_defaults_documented():
    site = parse_site(GOOD)
    assert (site.ndvi_threshold, site.resolution_m, site.max_cloud_fraction, site.min_coverage) == (0.1, 2.0, 0.2, 0.9)


@pytest.mark.parametrize("bad_id", ["Baige", "../etc", "a/b", "", "-x", "x" * 64, "a b"])
def test_id_must_be_slug(bad_id):
    with pytest.raises(SiteError, match=r"key 'id'.*slug"):
        parse_site(with_(id=bad_id), "s.yaml")


@pytest.mark.parametrize(
    "aoi, message",
    [
        ({"type": "Point", "coordinates": [98.7, 31.08]}, "must be a GeoJSON Polygon"),
        (
            {
                "type": "Polygon",
                "coordinates": [[[98.69, 31.07], [98.72, 31.10], [98.72, 31.07], [98.69, 31.10], [98.69, 31.07]]],
            },
            "Self-intersection",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[98.0, 31.0], [98.2, 31.0], [98.2, 31.2], [98.0, 31.2], [98.0, 31.0]]],
            },
            "more than the 100 km",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[500000, 3400000], [501000, 3400000], [501000, 3401000], [500000, 3400000]]],
            },
            "lon, lat",
        ),
    ],
)
def test_bad_aoi(aoi, message):
    with pytest.raises(SiteError) as err:
        parse_site(with_(aoi=aoi), "sites/x.yaml")
    assert "sites/x.yaml: key 'aoi'" in str(err.value) and message in str(err.value)


def test_prompt_outside_aoi_and_no_positive():
    with pytest.raises(SiteError, match="outside the aoi"):
        parse_site(with_(prompts=[{"lon": 99.5, "lat": 31.08, "label": 1, "date": "2020-01-01"}]))
    with pytest.raises(SiteError, match="label 1"):
        parse_site(with_(prompts=[{"lon": 98.70, "lat": 31.08, "label": 0, "date": "2020-01-01"}]))
    with pytest.raises(SiteError, match=r"prompts.0.label"):
        parse_site(with_(prompts=[{"lon": 98.70, "lat": 31.08, "label": 2, "date": "2020-01-01"}]))


def test_unknown_key_and_yaml_errors(tmp_path):
    with pytest.raises(SiteError, match="key 'ndvi_treshold': unknown key"):
        parse_site(with_(ndvi_treshold=0.2), "s.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(SiteError, match=f"{bad}: not valid YAML"):
        load_site(bad)
    with pytest.raises(SiteError, match="cannot read"):
        load_site(tmp_path / "missing.yaml")


def test_schema_in_docs_is_current():
    import json

    from scarmon.site import site_schema

    assert json.loads((ROOT / "docs" / "site.schema.json").read_text()) == site_schema()


def test_box_prompts():
    box = {"box": [98.695, 31.075, 98.705, 31.085], "date": "2020-01-01"}
    site = parse_site(with_(prompts=[{"lon": 98.70, "lat": 31.08, "label": 0, "date": "2020-01-01"}], boxes=[box]))
    assert site.boxes[0].box == (98.695, 31.075, 98.705, 31.085)  # a box alone is enough as a positive prompt
    with pytest.raises(SiteError, match=r"key 'boxes.0.box'.*west < east"):
        parse_site(with_(boxes=[{"box": [98.705, 31.075, 98.695, 31.085], "date": "2020-01-01"}]))
    with pytest.raises(SiteError, match="outside the aoi"):
        parse_site(with_(boxes=[{"box": [99.5, 31.0, 99.6, 31.1], "date": "2020-01-01"}]))
