"""The STAC catalog of the products: valid STAC 1.1.0 (checked offline with vendored schemas), relative links
that resolve in the store, items linked to the source scenes."""

from __future__ import annotations

import json
import posixpath
import socket
from pathlib import Path

import pytest

from scarmon.products.stac import StacError, validate, validate_store
from scarmon.store.backends import LocalStore
from tests.test_products_support import N_FRAMES, published_store_dir, tracked_store_dir  # noqa: F401 (fixtures)

SITE = "test-slide"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must never reach out: any socket connection fails the test."""

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _resolve(base_key: str, href: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_key), href))


def test_catalog_validates_offline_and_links_resolve(published_store_dir: Path, no_network: None) -> None:
    store = LocalStore(published_store_dir)
    assert validate_store(store) == 1 + 1 + N_FRAMES  # root catalog, the collection, one item per frame
    root = json.loads(store.get("catalog.json"))
    (child,) = [ln for ln in root["links"] if ln["rel"] == "child"]
    ckey = _resolve("catalog.json", child["href"])
    coll = json.loads(store.get(ckey))
    assert coll["id"] == SITE and coll["stac_version"] == "1.1.0"
    assert coll["extent"]["temporal"]["interval"][0][0].startswith("2021-06-05")
    for name, asset in coll["assets"].items():
        assert store.exists(_resolve(ckey, asset["href"])), name
    items = [ln for ln in coll["links"] if ln["rel"] == "item"]
    assert len(items) == N_FRAMES
    ikey = _resolve(ckey, items[3]["href"])
    item = json.loads(store.get(ikey))
    assert set(item["assets"]) >= {"mask", "polygon", "quicklook"}
    for name, asset in item["assets"].items():
        assert store.exists(_resolve(ikey, asset["href"])), name
    assert item["assets"]["mask"]["type"].startswith("image/tiff; application=geotiff")
    assert item["properties"]["scarmon:source_items"][0].startswith("S2A_MSIL2A_")
    ndvi_link, source = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert store.exists(_resolve(ikey, ndvi_link["href"])) and "S2A_MSIL2A_" in ndvi_link["title"]
    # the source Sentinel-2 item, by its public URL
    assert source["href"] == (
        "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items/"
        + item["properties"]["scarmon:source_items"][0]
    )
    # licence and credit
    (lic,) = [ln for ln in item["links"] if ln["rel"] == "license"]
    assert (
        "copernicus" in lic["href"].lower()
        and "Contains modified Copernicus Sentinel data 2021" in item["properties"]["description"]
    )
    assert (
        any(ln["rel"] == "license" for ln in coll["links"])
        and "Copernicus Sentinel data 2021-2023" in coll["description"]
        and coll["providers"][0]["roles"] == ["licensor", "producer"]
    )
    assert {ln["rel"] for ln in item["links"]} >= {"collection", "parent", "root"}
    for ln in item["links"]:
        if ln["rel"] in ("collection", "parent", "root"):
            assert store.exists(_resolve(ikey, ln["href"])), ln


def test_invalid_documents_are_rejected(published_store_dir: Path, no_network: None) -> None:
    store = LocalStore(published_store_dir)
    item = json.loads(
        store.get(
            f"{SITE}/stac/items/" + sorted(p.name for p in (published_store_dir / SITE / "stac" / "items").iterdir())[0]
        )
    )
    bad = {**item, "properties": {k: v for k, v in item["properties"].items() if k != "datetime"}}
    with pytest.raises(StacError, match="at /properties"):
        validate(bad, where="bad item")
    with pytest.raises(StacError, match="bbox"):
        validate({**item, "bbox": [1, 2]}, where="bad bbox")
    coll = json.loads(store.get(f"{SITE}/stac/collection.json"))
    with pytest.raises(StacError, match="license|description"):
        validate({k: v for k, v in coll.items() if k != "description"})
    with pytest.raises(StacError, match="not vendored"):
        validate({**item, "stac_extensions": ["https://stac-extensions.github.io/eo/v2.0.0/schema.json"]})


def test_schemas_are_vendored_package_data() -> None:
    import scarmon

    base = Path(scarmon.__path__[0]) / "products" / "data" / "stac-schemas"
    names = {p.name for p in base.rglob("*.json")}
    assert {"item.json", "collection.json", "catalog.json", "Feature.json", "Geometry.json"} <= names
    extensions = {p.parent.parent.name for p in base.joinpath("extensions").rglob("schema.json")}
    assert extensions == {"projection", "raster", "file", "classification"}


def test_items_carry_projection_raster_file_and_classification(published_store_dir: Path, no_network: None) -> None:
    """The grid in proj: fields (not a custom property), raster:bands of the COGs with their nodata, file sizes and
    checksums that match the bytes in the store, the mask's classes; all validated against the vendored schemas."""
    import hashlib

    import rasterio

    from scarmon.grid import SiteGrid
    from scarmon.products.stac import EXTENSIONS

    store = LocalStore(published_store_dir)
    index = json.loads(store.get(f"{SITE}/products/index.json"))
    grid = SiteGrid.from_dict(index["grid"])
    frame = index["frames"][5]
    ikey = f"{SITE}/stac/items/{frame['date']}_{frame['scene_id']}.json"
    item = json.loads(store.get(ikey))
    validate(item, where=ikey)
    assert sorted(item["stac_extensions"]) == sorted(EXTENSIONS.values())
    p = item["properties"]
    assert "scarmon:grid" not in p
    assert p["proj:code"] == f"EPSG:{grid.epsg}" and p["proj:shape"] == [grid.height, grid.width]
    assert p["proj:transform"] == list(grid.transform)[:6] and p["proj:bbox"] == list(grid.bounds)
    assert abs(p["proj:centroid"]["lat"] - 31.1) < 1e-3 and abs(p["proj:centroid"]["lon"] - 96.0) < 1e-3
    mask = item["assets"]["mask"]
    [band] = mask["raster:bands"]
    assert band["data_type"] == "uint8" and band["nodata"] == 255 and band["spatial_resolution"] == grid.resolution
    assert {c["value"]: c["name"] for c in mask["classification:classes"]} == {
        0: "not-scar",
        1: "scar",
        255: "not-observed",
    }
    assert item["assets"]["ndvi"]["raster:bands"][0]["scale"] == 1e-4
    for name, asset in item["assets"].items():
        data = store.get(_resolve(ikey, asset["href"]))
        assert asset["file:size"] == len(data), name
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest(), name
    # what the item says is what GDAL reads from the mask
    with rasterio.open(published_store_dir / _resolve(ikey, mask["href"])) as src:
        assert src.nodata == band["nodata"] and src.crs.to_epsg() == grid.epsg and src.shape == tuple(p["proj:shape"])
        assert list(src.transform)[:6] == p["proj:transform"]
        assert src.colormap(1)[1][:3] == (220, 0, 0) and src.tags()["site"] == SITE
        assert src.tags()["date"] == frame["date"] and src.tags()["scene_id"] == frame["scene_id"]
        assert src.tags()["tracker"] and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    # a wrong extension field is caught offline
    bad = json.loads(json.dumps(item))
    bad["assets"]["mask"]["file:checksum"] = "not-hex"
    with pytest.raises(StacError, match="file:checksum"):
        validate(bad)
    bad = json.loads(json.dumps(item))
    bad["properties"]["proj:shape"] = [1]
    with pytest.raises(StacError, match="proj:shape"):
        validate(bad)
