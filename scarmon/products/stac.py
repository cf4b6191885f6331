"""A STAC catalog of a site's products (pystac), validated offline against vendored STAC 1.1.0 JSON schemas.

Layout in the store (all links and asset hrefs relative, so the catalog works from a folder, over HTTP and on S3):

- `catalog.json`                         store-wide root catalog, one child link per site collection
- `S/stac/collection.json`               one collection per site: extent, item links, series/polygon/plot assets
- `S/stac/items/{date}_{scene}.json`     one item per frame: mask COG, polygon GeoJSON and quicklook assets, a
                                          `derived_from` link to the NDVI frame, the source STAC item ids

Only items whose frame changed are rewritten (the products index carries the tags). Every document is validated
before it is written: an invalid one raises StacError and the products index is not swapped.
"""

from __future__ import annotations

from scarmon.errors import ScarmonError
import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from scarmon.store import keys
from scarmon.store.documents import update_document
from scarmon.grid import SiteGrid
from scarmon.store.sequence import Manifest
from scarmon.site import Site
from scarmon.store.backends import Store

STAC_VERSION = "1.1.0"
SCHEMA_BASE = f"https://schemas.stacspec.org/v{STAC_VERSION}/"
ROOT_CATALOG_ID = "scarmon"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JSON = "application/json"
GEOJSON = "application/geo+json"


class StacError(ScarmonError):
    """A STAC document does not validate; the message names the document and the failing path."""


# ---------------------------------------------------------------------------------------------------------------
# offline validation

@lru_cache(maxsize=1)
def _registry():
    from jsonschema_specifications import REGISTRY as META
    from referencing import Resource
    from referencing.jsonschema import DRAFT7

    base = Path(__file__).resolve().parent / "data" / "stac-schemas"
    pairs = []
    spec = base.joinpath("stac-spec", f"v{STAC_VERSION}")
    folders = {"item": "item-spec", "catalog": "catalog-spec", "collection": "collection-spec"}
    for entry in spec.iterdir():
        if not entry.name.endswith(".json"):
            continue
        name = entry.name[:-5]
        uri = f"{SCHEMA_BASE}{folders.get(name, 'item-spec')}/json-schema/{entry.name}"
        contents = json.loads(entry.read_text())
        pairs.append((uri, Resource.from_contents(contents, default_specification=DRAFT7)))
        if contents.get("$id") and contents["$id"].rstrip("#") != uri:  # upstream's ".../commonjson"
            pairs.append((contents["$id"].rstrip("#"), Resource.from_contents(contents, default_specification=DRAFT7)))
    for entry in base.joinpath("geojson").iterdir():
        if entry.name.endswith(".json"):
            pairs.append((f"https://geojson.org/schema/{entry.name}",
                          Resource.from_contents(json.loads(entry.read_text()), default_specification=DRAFT7)))

    def no_network(uri: str):
        from referencing.exceptions import NoSuchResource

        raise NoSuchResource(ref=uri)  # never fetched: everything must be vendored

    from referencing import Registry

    return Registry(retrieve=no_network).with_resources(pairs).combine(META)


def schema_uri(kind: str) -> str:
    kind = kind.lower()
    return f"{SCHEMA_BASE}{kind}-spec/json-schema/{kind}.json"


def validate(doc: dict, *, where: str = "") -> None:
    """Validate a STAC Item, Collection or Catalog dict offline; raises StacError listing the errors."""
    from jsonschema import Draft7Validator

    kind = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(doc.get("type"))
    if kind is None:
        raise StacError(f"{where or doc.get('id')}: type {doc.get('type')!r} is not a STAC Item/Collection/Catalog")
    if doc.get("stac_extensions"):
        raise StacError(f"{where or doc.get('id')}: declares extensions {doc['stac_extensions']} whose schemas are "
                        "not vendored; vendor them under scarmon/data/stac-schemas first")
    reg = _registry()
    schema = reg.contents(schema_uri(kind))
    errors = sorted(Draft7Validator(schema, registry=reg).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]]
        raise StacError(f"{where or doc.get('id')} is not valid STAC {STAC_VERSION} ({kind}):\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# documents

def _footprint(grid: SiteGrid) -> tuple[dict, list[float]]:
    w, s, e, n = grid.bounds
    cols = [0, grid.width, grid.width, 0, 0]
    rows = [0, 0, grid.height, grid.height, 0]
    # pixel_to_lonlat adds half a pixel: undo it to get the outer corners
    lon, lat = grid.pixel_to_lonlat([c - 0.5 for c in cols], [r - 0.5 for r in rows])
    ring = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(lon, lat)]
    bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _dt(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _clean_num(v: Any) -> Any:
    return None if isinstance(v, float) and v != v else v


def build_item(site_id: str, frame: dict, grid: SiteGrid) -> dict:
    """The STAC item of one published frame (`frame` is an entry of the products index)."""
    import pystac

    geometry, bbox = _footprint(grid)
    props = {
        "title": f"{site_id} scar on {frame['date']}",
        "description": f"Scar mask, polygon and quicklook of scene {frame['scene_id']} (site {site_id}).",
        "scarmon:site": site_id,
        "scarmon:scene_id": frame["scene_id"],
        "scarmon:source_items": list(frame["item_ids"]),
        "scarmon:area_m2": _clean_num(frame.get("area_m2")),
        "scarmon:change_pct": _clean_num(frame.get("change_pct")),
        "scarmon:same_season_change_pct": _clean_num(frame.get("same_season_change_pct")),
        "scarmon:clear_fraction": frame.get("clear_fraction"),
        "scarmon:confidence": "low" if frame.get("low_confidence") else "normal",
        "scarmon:low_confidence_reason": frame.get("low_confidence_reason") or "",
        "scarmon:grid": {"epsg": grid.epsg, "shape": [grid.height, grid.width],
                         "transform": list(grid.transform)[:6]},
        "platform": frame["scene_id"].split("_")[0].lower().replace("s2a", "sentinel-2a")
                    .replace("s2b", "sentinel-2b").replace("s2c", "sentinel-2c"),
        "constellation": "sentinel-2",
    }
    item = pystac.Item(id=f"{frame['date']}_{frame['scene_id']}", geometry=geometry, bbox=bbox,
                       datetime=_dt(frame["datetime"]), properties=props, collection=site_id)
    up = "../../"
    item.add_asset("mask", pystac.Asset(up + frame["mask"], title="Scar mask (1 = scar), site grid", media_type=COG,
                                        roles=["data"]))
    item.add_asset("polygon", pystac.Asset(up + frame["polygon"], title="Scar polygon (lon/lat)",
                                           media_type=GEOJSON, roles=["data"]))
    item.add_asset("quicklook", pystac.Asset(up + frame["quicklook"], title="NDVI with the scar boundary",
                                             media_type=pystac.MediaType.PNG, roles=["overview", "visual"]))
    if frame.get("ndvi"):
        item.add_asset("ndvi", pystac.Asset(up + frame["ndvi"], title="NDVI frame (int16 x 1e-4)", media_type=COG,
                                            roles=["source"]))
        item.add_link(pystac.Link("derived_from", up + frame["ndvi"], media_type=COG,
                                  title="NDVI frame mosaicked from Sentinel-2 L2A items "
                                        + ", ".join(frame["item_ids"])))
    for rel, href in (("collection", "../collection.json"), ("parent", "../collection.json"),
                      ("root", "../../../" + keys.ROOT_CATALOG)):
        item.add_link(pystac.Link(rel, href, media_type=JSON))
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    return doc


def build_collection(site: Site, grid: SiteGrid, index: dict) -> dict:
    import pystac

    frames = index["frames"]
    _, bbox = _footprint(grid)
    times = [_dt(f["datetime"]) for f in frames]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]),
                           pystac.TemporalExtent([[min(times), max(times)] if times else [None, None]]))
    coll = pystac.Collection(
        id=site.id, title=f"scarmon products: {site.display_name}",
        description=(f"Landslide scar of site {site.display_name} tracked in Sentinel-2 L2A NDVI: per-frame masks "
                     "(COG), polygons, quicklooks; the area series, polygons of all frames and plots."),
        extent=extent, license="other", keywords=["landslide", "sentinel-2", "ndvi", "scar"],
        summaries=pystac.Summaries({"constellation": ["sentinel-2"]}),
    )
    up = "../"
    files = index.get("files", {})
    typed = {"series_csv": ("text/csv", "Area series (CSV)"), "series_json": (JSON, "Area series (JSON)"),
             "polygons_geojson": (GEOJSON, "Scar polygons of all frames (lon/lat)"),
             "polygons_parquet": ("application/vnd.apache.parquet", "Scar polygons of all frames (GeoParquet, UTM)")}
    for name, rel in files.items():
        mt, title = typed.get(name, (None, name))
        coll.add_asset(name, pystac.Asset(up + rel, title=title, media_type=mt, roles=["data"]))
    for name, rel in index.get("plots", {}).items():
        coll.add_asset(f"plot_{name}", pystac.Asset(up + rel, title=name.replace("_", " "),
                                                   media_type=pystac.MediaType.PNG, roles=["visual"]))
    coll.add_asset("products_index", pystac.Asset(up + "products/index.json", title="Products index (dashboard)",
                                                 media_type=JSON, roles=["metadata"]))
    for rel, href in (("root", "../../" + keys.ROOT_CATALOG), ("parent", "../../" + keys.ROOT_CATALOG)):
        coll.add_link(pystac.Link(rel, href, media_type=JSON))
    for f in frames:
        coll.add_link(pystac.Link("item", f"items/{f['date']}_{f['scene_id']}.json", media_type=GEOJSON))
    return coll.to_dict(include_self_link=False, transform_hrefs=False)


def _dumps(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


def write_stac(site: Site, store: Store, manifest: Manifest, index: dict, old_index: dict | None, *, writer) -> int:
    """Write the items of changed frames, the collection and the root catalog entry; returns the items written."""
    grid = SiteGrid.from_dict(manifest.grid)
    old = {f["scene_id"]: f for f in (old_index or {}).get("frames", [])} if (old_index or {}).get("stac") else {}
    written = 0
    for frame in index["frames"]:
        prev = old.get(frame["scene_id"])
        if prev is not None and prev.get("row_tag") == frame["row_tag"]:
            continue
        key = keys.stac_item(site.id, frame)
        doc = build_item(site.id, frame, grid)
        validate(doc, where=key)
        writer.put(key, _dumps(doc), GEOJSON)
        written += 1
    ckey = keys.stac_collection(site.id)
    coll = build_collection(site, grid, index)
    validate(coll, where=ckey)
    writer.put_if_changed(ckey, _dumps(coll), JSON)
    _add_to_root(store, site.id, site.display_name)
    return written


def _add_to_root(store: Store, site_id: str, title: str, max_attempts: int = 10) -> None:
    import pystac

    href = keys.stac_collection(site_id)

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            cat = pystac.Catalog(id=ROOT_CATALOG_ID, title="scarmon landslide scar products",
                                 description="Products of every site monitored by scarmon, one collection per site.")
            cat.add_link(pystac.Link("root", "./" + keys.ROOT_CATALOG, media_type=JSON))
            doc = cat.to_dict(include_self_link=False, transform_hrefs=False)
        children = [ln for ln in doc.get("links", []) if ln.get("rel") == "child"]
        if any(ln.get("href") == href and ln.get("title") == title for ln in children):
            return None
        links = [ln for ln in doc.get("links", []) if not (ln.get("rel") == "child" and ln.get("href") == href)]
        new = {**doc, "links": [*links, {"rel": "child", "href": href, "type": JSON, "title": title}]}
        validate(new, where=keys.ROOT_CATALOG)
        return new

    update_document(store, keys.ROOT_CATALOG, change, parse=_parse_root, dump=_dumps, what="root STAC catalog",
                    content_type=JSON, max_attempts=max_attempts)


def _parse_root(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("type") != "Catalog":
        raise ValueError("not a STAC Catalog")
    return doc


def validate_store(store: Store, site_id: str | None = None) -> int:
    """Validate the root catalog and the collection + items of one (or every) site in the store; returns count."""
    n = 0
    root = json.loads(store.get(keys.ROOT_CATALOG))
    validate(root, where=keys.ROOT_CATALOG)
    n += 1
    hrefs = [ln["href"] for ln in root["links"] if ln["rel"] == "child"]
    for href in hrefs:
        sid = href.split("/")[0]
        if site_id and sid != site_id:
            continue
        coll = json.loads(store.get(href))
        validate(coll, where=href)
        n += 1
        base = href.rsplit("/", 1)[0]
        for ln in coll["links"]:
            if ln["rel"] == "item":
                key = f"{base}/{ln['href']}"
                validate(json.loads(store.get(key)), where=key)
                n += 1
    return n


__all__ = ["StacError", "build_collection", "build_item", "validate", "validate_store", "write_stac"]
