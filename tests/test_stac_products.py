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
    (derived,) = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert store.exists(_resolve(ikey, derived["href"])) and "S2A_MSIL2A_" in derived["title"]
    assert {ln["rel"] for ln in item["links"]} >= {"collection", "parent", "root"}
    for ln in item["links"]:
        if ln["rel"] in ("collection", "parent", "root"):
            assert store.exists(_resolve(ikey, ln["href"])), ln


def test_invalid_documents_are_rejected(published_store_dir: Path, no_network: None) -> None:
    store = LocalStore(published_store_dir)
    item = json.loads(store.get(f"{SITE}/stac/items/" + sorted(p.name for p in (published_store_dir / SITE / "stac"
                                                                                 / "items").iterdir())[0]))
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
