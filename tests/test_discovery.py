"""Static catalogs: an ItemCollection over HTTP, a Catalog of links on disk, relative hrefs, local filtering."""

import datetime as dt
import functools
import http.server
import json
import threading

import pytest
from shapely.geometry import box

from scarmon.ingest.discovery import CatalogError, open_catalog

UTC = dt.UTC
AOI = box(96.0, 31.09, 96.02, 31.11)


def item(i, day, cloud=10.0, lon=96.01, collection="sentinel-2-l2a"):
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"item-{i}",
        "collection": collection,
        "geometry": box(lon - 0.5, 30.6, lon + 0.5, 31.6).__geo_interface__,
        "bbox": [lon - 0.5, 30.6, lon + 0.5, 31.6],
        "properties": {"datetime": f"2022-03-{day:02d}T04:17:01Z", "eo:cloud_cover": cloud},
        "assets": {"B04": {"href": f"data/{i}/B04.tif"}},
        "links": [],
    }


WINDOW = dict(
    aoi=AOI, start=dt.datetime(2022, 3, 1, tzinfo=UTC), end=dt.datetime(2022, 3, 20, tzinfo=UTC), max_cloud=50.0
)


def test_item_collection_filters_locally_and_resolves_relative_hrefs(tmp_path):
    feats = [item(1, 2), item(2, 25), item(3, 5, cloud=90), item(4, 6, lon=100.0), item(5, 7, collection="other")]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    got = open_catalog(str(path), collection="sentinel-2-l2a").search(**WINDOW)
    assert [i["id"] for i in got] == ["item-1"]  # date window, cloud prefilter, footprint, collection
    # Without --collection a static catalog's items are all taken (its collection ids are its own business).
    assert [i["id"] for i in open_catalog(str(path)).search(**WINDOW)] == ["item-1", "item-5"]
    assert got[0]["assets"]["B04"]["href"] == str(tmp_path / "data/1/B04.tif")


def test_item_collection_over_http(tmp_path):
    (tmp_path / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": [item(1, 2), item(2, 3)]})
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/items.json"
        got = open_catalog(url).search(**WINDOW)
        assert [i["id"] for i in got] == ["item-1", "item-2"]
        assert got[0]["assets"]["B04"]["href"] == f"http://127.0.0.1:{server.server_address[1]}/data/1/B04.tif"
        with pytest.raises(CatalogError, match="missing.json"):
            open_catalog(url.replace("items", "missing")).search(**WINDOW)
    finally:
        server.shutdown()


def test_static_catalog_is_walked(tmp_path):
    (tmp_path / "catalog.json").write_text(
        json.dumps({"type": "Catalog", "id": "root", "links": [{"rel": "child", "href": "./s2/collection.json"}]})
    )
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "collection.json").write_text(
        json.dumps(
            {
                "type": "Collection",
                "id": "sentinel-2-l2a",
                "links": [{"rel": "item", "href": "./a/a.json"}, {"rel": "item", "href": "./b/b.json"}],
            }
        )
    )
    for name, day in (("a", 3), ("b", 28)):
        (tmp_path / "s2" / name).mkdir()
        (tmp_path / "s2" / name / f"{name}.json").write_text(json.dumps(item(name, day)))
    got = open_catalog(str(tmp_path / "catalog.json")).search(**WINDOW)
    assert [i["id"] for i in got] == ["item-a"]
    assert got[0]["assets"]["B04"]["href"] == str(tmp_path / "s2" / "a" / "data" / "a" / "B04.tif")


def test_not_a_stac_document(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(CatalogError, match="not a STAC ItemCollection"):
        open_catalog(str(path)).search(**WINDOW)


def test_known_catalogs_pick_their_collection():
    assert open_catalog("https://earth-search.aws.element84.com/v1").collection == "sentinel-2-c1-l2a"
    assert open_catalog().collection == "sentinel-2-l2a"


def test_malformed_items_are_left_out_with_their_reason(tmp_path):
    garbage_date = item(2, 3)
    garbage_date["properties"]["datetime"] = "2022-13-45T99:00:00Z"
    no_props = item(3, 4)
    no_props["properties"] = None
    bad_geometry = item(4, 5)
    bad_geometry["geometry"] = {"type": "Polygon", "coordinates": "nope"}
    feats = [item(1, 2), garbage_date, "not an object", no_props, bad_geometry, item(5, 6)]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    catalog = open_catalog(str(path))
    assert [i["id"] for i in catalog.search(**WINDOW)] == ["item-1", "item-5"]
    reasons = dict(catalog.malformed)
    assert set(reasons) == {"item-2", "feature #2", "item-3", "item-4"}
    assert "not an ISO 8601" in reasons["item-2"] and "not an object" in reasons["feature #2"]


@pytest.mark.parametrize(
    "doc, problem",
    [
        ({"type": "FeatureCollection", "features": {"a": 1}}, "'features' is dict, not a list"),
        ([1, 2, 3], "JSON list, not a STAC object"),
        ({"type": "Nonsense"}, "not a STAC ItemCollection"),
    ],
)
def test_malformed_document_is_one_clear_error(tmp_path, doc, problem):
    path = tmp_path / "items.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match="items.json") as err:
        open_catalog(str(path)).search(**WINDOW)
    assert problem in str(err.value)
