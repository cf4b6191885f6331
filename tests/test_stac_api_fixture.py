"""The `stac_api` fixture serves a real STAC API that pystac-client searches like Planetary Computer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pystac_client
import pytest

from tests.stac_api import PostgresNotInstalled, find_postgres_bindir, start_stac_api

pytestmark = [
    pytest.mark.slow,
    # sort is advertised as STAC API v1.1.0, which pystac-client 0.9.1 does not recognise (see below)
    pytest.mark.filterwarnings("ignore::pystac_client.warnings.DoesNotConformTo"),
]

# Own collection id: the fixture is shared by the session, other tests may load "sentinel-2-l2a" themselves.
COLLECTION = "sentinel-2-l2a-fixture-test"

# Footprint of MGRS tile 13TDE (Colorado, UTM 13N), as in Planetary Computer's items for that tile.
TILE_13TDE = [
    [-106.1831726, 40.6447948],
    [-104.8845569, 40.6507988],
    [-104.8862201, 39.6615512],
    [-106.1661317, 39.6557526],
    [-106.1831726, 40.6447948],
]
# Footprint of MGRS tile 35MNM (Tanzania, UTM 35S): far away from the search AOI.
TILE_35MNM = [[26.999, -4.5227], [27.9874, -4.5227], [27.9874, -5.5155], [26.999, -5.5155], [26.999, -4.5227]]
# Search AOI: a small polygon inside tile 13TDE.
AOI = {
    "type": "Polygon",
    "coordinates": [[[-105.6, 40.0], [-105.4, 40.0], [-105.4, 40.2], [-105.6, 40.2], [-105.6, 40.0]]],
}

BANDS = {  # asset key -> (title, gsd, eo:bands)
    "B04": ("Band 4 - Red - 10m", 10.0, [{"name": "B04", "common_name": "red", "center_wavelength": 0.665}]),
    "B08": ("Band 8 - NIR - 10m", 10.0, [{"name": "B08", "common_name": "nir", "center_wavelength": 0.842}]),
    "SCL": ("Scene classfication map (SCL)", 20.0, None),
}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def make_collection() -> dict:
    item_assets = {}
    for key, (title, gsd, eo_bands) in BANDS.items():
        item_assets[key] = {"type": COG, "roles": ["data"], "title": title, "gsd": gsd}
        if eo_bands:
            item_assets[key]["eo:bands"] = eo_bands
    return {
        "type": "Collection",
        "id": COLLECTION,
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"],
        "title": "Sentinel-2 Level-2A (test)",
        "description": "Sentinel-2-L2A-like collection for the STAC API fixture test",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]},
        },
        "links": [],
        "item_assets": item_assets,
    }


def make_item(
    root: Path, *, tile: str, ring: list, epsg: int, when: str, cloud: float, baseline: str = "05.11"
) -> dict:
    stamp = when[:19].replace("-", "").replace(":", "")
    item_id = f"S2A_MSIL2A_{stamp}_R141_T{tile}_{stamp}"
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assets = {}
    for key, (title, gsd, eo_bands) in BANDS.items():
        assets[key] = {
            "href": str(root / item_id / f"T{tile}_{stamp}_{key}_{int(gsd)}m.tif"),
            "type": COG,
            "roles": ["data"],
            "title": title,
            "gsd": gsd,
            "proj:shape": [10980, 10980] if gsd == 10 else [5490, 5490],
        }
        if eo_bands:
            assets[key]["eo:bands"] = eo_bands
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
        ],
        "id": item_id,
        "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "properties": {
            "datetime": when,
            "platform": "Sentinel-2A",
            "constellation": "Sentinel 2",
            "instruments": ["msi"],
            "eo:cloud_cover": cloud,
            "s2:processing_baseline": baseline,
            "s2:mgrs_tile": tile,
            "proj:epsg": epsg,
        },
        "links": [],
        "assets": assets,
    }


@pytest.fixture(scope="module")
def loaded(stac_api, tmp_path_factory):
    root = tmp_path_factory.mktemp("s2")
    items = [
        make_item(root, tile="13TDE", ring=TILE_13TDE, epsg=32613, when="2024-08-03T17:49:01.024000Z", cloud=7.5),
        make_item(root, tile="13TDE", ring=TILE_13TDE, epsg=32613, when="2024-08-23T17:49:01.024000Z", cloud=66.84),
        make_item(
            root,
            tile="35MNM",
            ring=TILE_35MNM,
            epsg=32735,
            when="2024-08-13T08:06:11.024000Z",
            cloud=12.5,
            baseline="05.10",
        ),
    ]
    stac_api.load_collection(make_collection())
    stac_api.load_items(items)
    stac_api.load_items(items)  # upsert: loading twice neither fails nor duplicates
    return stac_api, {it["id"]: it for it in items}, [it["id"] for it in items]


def ids(search) -> list[str]:
    return [it.id for it in search.items()]


def test_startup_time(stac_api):
    print(f"\nSTAC API fixture started in {stac_api.startup_seconds:.1f} s at {stac_api.url}")
    assert stac_api.url.startswith("http://127.0.0.1:")
    assert stac_api.startup_seconds < 60


def test_client_open_and_conformance(loaded):
    api, _, _ = loaded
    client = pystac_client.Client.open(api.url)
    for conf in ("ITEM_SEARCH", "QUERY", "FILTER"):
        assert client.conforms_to(conf), conf
    # The server advertises sort as STAC API v1.1.0; pystac-client 0.9.1 only recognises v1.0.x, so
    # `sortby=` warns DoesNotConformTo("SORT") but is still sent, and works (test_sortby).
    assert "https://api.stacspec.org/v1.1.0/item-search#sort" in client.get_conforms_to()
    assert COLLECTION in [c.id for c in client.get_collections()]


def test_intersects_and_datetime(loaded):
    api, _, (aug03, aug23, tz13) = loaded
    client = pystac_client.Client.open(api.url)
    s = client.search(
        collections=[COLLECTION], intersects=AOI, datetime="2024-08-01/2024-08-31", sortby="properties.datetime"
    )
    assert ids(s) == [aug03, aug23]  # the 35MNM scene is outside the AOI
    s = client.search(collections=[COLLECTION], intersects=AOI, datetime="2024-08-10T00:00:00Z/2024-08-31T23:59:59Z")
    assert ids(s) == [aug23]
    s = client.search(collections=[COLLECTION], datetime="2024-08-10/2024-08-20")
    assert ids(s) == [tz13]
    s = client.search(collections=[COLLECTION], intersects=AOI, datetime="2023-01-01/2023-12-31")
    assert ids(s) == []


def test_query_extension(loaded):
    api, _, (aug03, aug23, tz13) = loaded
    client = pystac_client.Client.open(api.url)
    # 7.5 < 50 only as numbers ("7.5" > "50" as text)
    s = client.search(collections=[COLLECTION], query={"eo:cloud_cover": {"lt": 50}})
    assert sorted(ids(s)) == sorted([aug03, tz13])
    s = client.search(collections=[COLLECTION], intersects=AOI, query={"eo:cloud_cover": {"lt": 50}})
    assert ids(s) == [aug03]
    s = client.search(collections=[COLLECTION], query={"s2:processing_baseline": {"eq": "05.10"}})
    assert ids(s) == [tz13]


def test_cql2_json_filter(loaded):
    api, _, (aug03, aug23, tz13) = loaded
    client = pystac_client.Client.open(api.url)
    lt50 = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}
    s = client.search(collections=[COLLECTION], filter=lt50, filter_lang="cql2-json")
    assert sorted(ids(s)) == sorted([aug03, tz13])
    both = {"op": "and", "args": [lt50, {"op": "=", "args": [{"property": "s2:mgrs_tile"}, "13TDE"]}]}
    s = client.search(collections=[COLLECTION], filter=both, filter_lang="cql2-json")
    assert ids(s) == [aug03]
    # GET transports the filter as a string: must give the same answer
    s = client.search(collections=[COLLECTION], filter=both, filter_lang="cql2-json", method="GET")
    assert ids(s) == [aug03]


def test_sortby(loaded):
    api, _, (aug03, aug23, tz13) = loaded
    client = pystac_client.Client.open(api.url)
    # numeric, not text order (7.5 < 12.5 < 66.84): needs the typed eo:cloud_cover queryable
    s = client.search(collections=[COLLECTION], sortby="-properties.eo:cloud_cover")
    assert ids(s) == [aug23, tz13, aug03]
    s = client.search(collections=[COLLECTION], sortby=[{"field": "properties.eo:cloud_cover", "direction": "asc"}])
    assert ids(s) == [aug03, tz13, aug23]
    s = client.search(collections=[COLLECTION], sortby="-properties.eo:cloud_cover", method="GET")
    assert ids(s) == [aug23, tz13, aug03]
    s = client.search(collections=[COLLECTION], sortby="-properties.datetime")
    assert ids(s) == [aug23, tz13, aug03]


@pytest.mark.filterwarnings("ignore:numberMatched or context.matched not in response")
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_paging(loaded, method):
    api, _, (aug03, aug23, tz13) = loaded
    client = pystac_client.Client.open(api.url)
    s = client.search(collections=[COLLECTION], limit=1, sortby="properties.datetime", method=method)
    pages = [[it.id for it in page.items] for page in s.pages()]
    assert pages == [[aug03], [tz13], [aug23]]
    assert s.matched() in (3, None)  # pgstac may skip the count (context extension off)
    s = client.search(collections=[COLLECTION], limit=1, max_items=2, sortby="properties.datetime", method=method)
    assert ids(s) == [aug03, tz13]


def test_items_come_back_unchanged(loaded):
    api, by_id, _ = loaded
    client = pystac_client.Client.open(api.url)
    got = list(client.search(collections=[COLLECTION]).items_as_dicts())
    assert sorted(d["id"] for d in got) == sorted(by_id)
    for d in got:
        want = by_id[d["id"]]
        assert d["collection"] == COLLECTION
        assert d["properties"]["datetime"] == want["properties"]["datetime"]
        for k in ("eo:cloud_cover", "s2:processing_baseline", "s2:mgrs_tile", "proj:epsg"):
            assert d["properties"][k] == want["properties"][k], k
        assert d["geometry"]["coordinates"] == want["geometry"]["coordinates"]
        assert d["bbox"] == pytest.approx(want["bbox"])
        assert set(d["assets"]) == set(want["assets"])
        for key, asset in want["assets"].items():  # pgstac de/re-hydrates assets against item_assets
            assert d["assets"][key] == asset, key
    # and through pystac objects (what scarmon's discovery code gets)
    for item in client.search(collections=[COLLECTION]).items():
        for key in BANDS:
            assert item.assets[key].href == by_id[item.id]["assets"][key]["href"]
            assert os.path.isabs(item.assets[key].href)


def test_stop_leaves_no_process(tmp_path):
    """A separate instance: stop() ends uvicorn and the postmaster and removes the cluster dir."""
    try:
        find_postgres_bindir()
    except PostgresNotInstalled as e:
        pytest.skip(f"real STAC API unavailable: {e}")
    with start_stac_api(tmp_path) as api:
        uvicorn_pid = api._uvicorn.pid
        postmaster_pid = int((api.pg_data / "postmaster.pid").read_text().split()[0])
        pg_dir = api.pg_dir
    assert api._uvicorn is None and api._watchdog is None
    for pid in (uvicorn_pid, postmaster_pid):
        assert not _alive(pid), pid
    assert not pg_dir.exists()
    assert (tmp_path / "stac-api.log").exists()  # the caller's dir is left alone


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5  # a postmaster reparented to init may linger as a zombie briefly
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True
