"""A STAC catalog of a site's products (pystac), validated offline against vendored STAC 1.1.0 JSON schemas.

Layout in the store (all links and asset hrefs relative, so the catalog works from a folder, over HTTP and on S3):

- `catalog.json`                         store-wide root catalog, one child link per site collection
- `S/stac/collection.json`               one collection per site: extent, item links, series/polygon/plot assets
- `S/stac/items/{date}_{scene}.json`     one item per frame: mask COG, polygon GeoJSON, quicklook and NDVI assets;
                                          `derived_from` links to the NDVI frame and to the source Sentinel-2 items

Items use the projection (v2.0.0: `proj:code`, `proj:shape`, `proj:transform`, `proj:bbox`, `proj:centroid`),
raster (v1.1.0: `raster:bands` with data type, nodata, scale, resolution), file (v2.1.0: `file:size`, multihash
`file:checksum`) and classification (v1.1.0: the mask's classes) extensions; their JSON schemas are vendored next to
the STAC ones, so validation stays offline. Every document links the Copernicus Sentinel data legal notice
(`license`) and carries the credit the notice asks for.

Only items whose frame changed are rewritten (the products index carries the tags). Every document is validated
before it is written: an invalid one raises StacError and the products index is not swapped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from scarmon.errors import ScarmonError
from scarmon.grid import SiteGrid
from scarmon.site import Site
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store
from scarmon.store.documents import update_document
from scarmon.store.sequence import Manifest

STAC_VERSION = "1.1.0"
SCHEMA_BASE = f"https://schemas.stacspec.org/v{STAC_VERSION}/"
ROOT_CATALOG_ID = "scarmon"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JSON = "application/json"
GEOJSON = "application/geo+json"
PNG = "image/png"

EXTENSIONS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
"""The extensions scarmon's documents use; each schema is vendored under data/stac-schemas/extensions/."""

LICENSE_URL = "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice"
CREDIT = "Contains modified Copernicus Sentinel data {years}, processed by scarmon"
PROVIDERS: list[dict[str, Any]] = [
    {
        "name": "European Union / ESA, Copernicus",
        "roles": ["licensor", "producer"],
        "url": "https://sentinels.copernicus.eu/",
    },
    {"name": "scarmon", "roles": ["processor"], "description": "scar masks, outlines and areas from Sentinel-2 NDVI"},
]

SOURCE_ITEM_URLS = (  # where public Sentinel-2 L2A items live, by the shape of their id
    (
        re.compile(r"^S2[A-D]_MSIL2A_\d{8}T\d{6}_"),
        "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items/{id}",
    ),
    (
        re.compile(r"^S2[A-D]_T\d{2}[A-Z]{3}_\d{8}T\d{6}_L2A$"),
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-c1-l2a/items/{id}",
    ),
    (
        re.compile(r"^S2[A-D]_\d{1,2}[A-Z]{3}_\d{8}_\d+_L2A$"),
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/{id}",
    ),
)


class StacError(ScarmonError):
    """A STAC document does not validate; the message names the document and the failing path."""


# ---------------------------------------------------------------------------------------------------------------
# offline validation


@lru_cache(maxsize=1)
def _registry() -> Any:
    from jsonschema_specifications import REGISTRY as META  # type: ignore[import-untyped]  # no stubs shipped
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
            pairs.append(
                (
                    f"https://geojson.org/schema/{entry.name}",
                    Resource.from_contents(json.loads(entry.read_text()), default_specification=DRAFT7),
                )
            )
    for path in sorted(base.joinpath("extensions").glob("*/*/schema.json")):
        contents = json.loads(path.read_text())
        pairs.append((contents["$id"].rstrip("#"), Resource.from_contents(contents, default_specification=DRAFT7)))

    def no_network(uri: str) -> Any:
        from referencing.exceptions import NoSuchResource

        # never fetched: everything must be vendored
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs-generated __init__, invisible to mypy

    from referencing import Registry

    registry = Registry(retrieve=no_network)  # type: ignore[call-arg]  # attrs-generated __init__, as above
    return registry.with_resources(pairs).combine(META)


def schema_uri(kind: str) -> str:
    kind = kind.lower()
    return f"{SCHEMA_BASE}{kind}-spec/json-schema/{kind}.json"


def validate(doc: Mapping[str, Any], *, where: str = "") -> None:
    """Validate a STAC Item, Collection or Catalog dict offline, with every extension it declares (their schemas
    must be vendored); raises StacError listing the errors."""
    from jsonschema import Draft7Validator

    kind = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(str(doc.get("type")))
    if kind is None:
        raise StacError(f"{where or doc.get('id')}: type {doc.get('type')!r} is not a STAC Item/Collection/Catalog")
    reg = _registry()
    schemas = [schema_uri(kind)]
    for ext in doc.get("stac_extensions") or []:
        try:
            reg.contents(str(ext))
        except Exception:  # noqa: BLE001 - referencing raises several kinds for an unknown URI
            raise StacError(
                f"{where or doc.get('id')}: declares the extension {ext} whose schema is not vendored; "
                "vendor it under scarmon/products/data/stac-schemas/extensions first"
            ) from None
        schemas.append(str(ext))
    errors = []
    for uri in schemas:
        errors += sorted(
            Draft7Validator(reg.contents(uri), registry=reg).iter_errors(doc), key=lambda e: list(e.absolute_path)
        )
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]]
        raise StacError(f"{where or doc.get('id')} is not valid STAC {STAC_VERSION} ({kind}):\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# documents


def _footprint(grid: SiteGrid) -> tuple[dict[str, Any], list[float]]:
    import numpy as np

    cols = np.array([0, grid.width, grid.width, 0, 0], dtype=float)
    rows = np.array([0, 0, grid.height, grid.height, 0], dtype=float)
    # pixel_to_lonlat adds half a pixel: undo it to get the outer corners
    lon, lat = grid.pixel_to_lonlat(cols - 0.5, rows - 0.5)
    ring = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(lon, lat, strict=True)]
    bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _dt(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _clean_num(v: Any) -> Any:
    return None if isinstance(v, float) and v != v else v


def _projection(grid: SiteGrid) -> dict[str, Any]:
    """The projection extension's fields of the site grid (every COG of a site lies on it)."""
    lon, lat = grid.pixel_to_lonlat((grid.width - 1) / 2, (grid.height - 1) / 2)
    return {
        "proj:code": f"EPSG:{grid.epsg}",
        "proj:shape": [grid.height, grid.width],
        "proj:transform": [float(v) for v in list(grid.transform)[:6]],
        "proj:bbox": [float(v) for v in grid.bounds],
        "proj:centroid": {"lat": round(float(lat), 7), "lon": round(float(lon), 7)},
    }


def file_fields(data: bytes) -> dict[str, Any]:
    """The file extension's size and multihash checksum (sha2-256: prefix 1220) of an asset's bytes."""
    return {"file:size": len(data), "file:checksum": "1220" + hashlib.sha256(data).hexdigest()}


def source_item_url(item_id: str, env: Mapping[str, str] | None = None) -> str | None:
    """The public URL of a source Sentinel-2 item: $SCARMON_SOURCE_ITEM_URL with "{id}" if set, else by the id's
    shape (Planetary Computer, Earth Search); None when unknown (the id stays in `scarmon:source_items`)."""
    template = (os.environ if env is None else env).get("SCARMON_SOURCE_ITEM_URL")
    if template:
        return template.replace("{id}", item_id)
    for pattern, url in SOURCE_ITEM_URLS:
        if pattern.match(item_id):
            return url.replace("{id}", item_id)
    return None


def _credit(years: list[int]) -> str:
    ys = sorted(set(years))
    span = "" if not ys else str(ys[0]) if len(ys) == 1 else f"{ys[0]}-{ys[-1]}"
    return CREDIT.format(years=span).replace("  ", " ")


def build_item(
    site_id: str, frame: Mapping[str, Any], grid: SiteGrid, files: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The STAC item of one published frame (`frame` is an entry of the products index; `files` the file
    extension's fields per asset key, from `file_fields`)."""
    import pystac

    from scarmon.ingest.frames import NDVI_NODATA, NDVI_SCALE
    from scarmon.products.publish import MASK_COLORS, MASK_NODATA, MASK_VALUES

    files = files or {}
    geometry, bbox = _footprint(grid)
    credit = _credit([int(frame["date"][:4])])
    props = {
        "title": f"{site_id} scar on {frame['date']}",
        "description": f"Scar mask, outline, quicklook and NDVI of scene {frame['scene_id']} (site {site_id}). "
        f"{credit}.",
        "scarmon:site": site_id,
        "scarmon:scene_id": frame["scene_id"],
        "scarmon:source_items": list(frame["item_ids"]),
        "scarmon:area_m2": _clean_num(frame.get("area_m2")),
        "scarmon:change_pct": _clean_num(frame.get("change_pct")),
        "scarmon:same_season_change_pct": _clean_num(frame.get("same_season_change_pct")),
        "scarmon:clear_fraction": frame.get("clear_fraction"),
        "scarmon:confidence": "low" if frame.get("low_confidence") else "normal",
        "scarmon:low_confidence_reason": frame.get("low_confidence_reason") or "",
        "platform": frame["scene_id"]
        .split("_")[0]
        .lower()
        .replace("s2a", "sentinel-2a")
        .replace("s2b", "sentinel-2b")
        .replace("s2c", "sentinel-2c"),
        "constellation": "sentinel-2",
        **_projection(grid),
    }
    item = pystac.Item(
        id=f"{frame['date']}_{frame['scene_id']}",
        geometry=geometry,
        bbox=bbox,
        datetime=_dt(frame["datetime"]),
        properties=props,
        collection=site_id,
    )
    up = "../../"
    res = grid.resolution
    classes = [{**c, "color_hint": "{:02X}{:02X}{:02X}".format(*MASK_COLORS[int(c["value"])][:3])} for c in MASK_VALUES]
    mask_band = {
        "data_type": "uint8",
        "nodata": MASK_NODATA,
        "spatial_resolution": res,
        "sampling": "area",
        "classification:classes": classes,
    }
    item.add_asset(
        "mask",
        pystac.Asset(
            up + frame["mask"],
            title="Scar mask: 0 not scar, 1 scar, 255 not observed or outside the AOI (nodata); site grid",
            media_type=COG,
            roles=["data"],
            extra_fields={"raster:bands": [mask_band], "classification:classes": classes, **files.get("mask", {})},
        ),
    )
    item.add_asset(
        "polygon",
        pystac.Asset(
            up + frame["polygon"],
            title="Scar outline (lon/lat)",
            media_type=GEOJSON,
            roles=["data"],
            extra_fields=dict(files.get("polygon", {})),
        ),
    )
    item.add_asset(
        "quicklook",
        pystac.Asset(
            up + frame["quicklook"],
            title="NDVI with the scar boundary",
            media_type=PNG,
            roles=["overview", "visual"],
            extra_fields=dict(files.get("quicklook", {})),
        ),
    )
    if frame.get("ndvi"):
        item.add_asset(
            "ndvi",
            pystac.Asset(
                up + frame["ndvi"],
                title="NDVI frame (int16 x 1e-4)",
                media_type=COG,
                roles=["source"],
                extra_fields={
                    "raster:bands": [
                        {
                            "data_type": "int16",
                            "nodata": NDVI_NODATA,
                            "scale": NDVI_SCALE,
                            "offset": 0.0,
                            "spatial_resolution": res,
                            "sampling": "area",
                            "unit": "1",
                        }
                    ],
                    **files.get("ndvi", {}),
                },
            ),
        )
        item.add_link(
            pystac.Link(
                "derived_from",
                up + frame["ndvi"],
                media_type=COG,
                title="NDVI frame mosaicked from Sentinel-2 L2A items " + ", ".join(frame["item_ids"]),
            )
        )
    for item_id in frame["item_ids"]:
        url = source_item_url(item_id)
        if url:
            item.add_link(pystac.Link("derived_from", url, media_type=GEOJSON, title=f"Sentinel-2 L2A item {item_id}"))
    item.add_link(
        pystac.Link(
            "license", LICENSE_URL, media_type="text/html", title="Legal notice on the use of Copernicus Sentinel data"
        )
    )
    for rel, href in (
        ("collection", "../collection.json"),
        ("parent", "../collection.json"),
        ("root", "../../../" + keys.ROOT_CATALOG),
    ):
        item.add_link(pystac.Link(rel, href, media_type=JSON))
    doc: dict[str, Any] = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["stac_extensions"] = sorted(EXTENSIONS.values())
    return doc


def build_collection(site: Site, grid: SiteGrid, index: Mapping[str, Any]) -> dict[str, Any]:
    import pystac

    frames = index["frames"]
    _, bbox = _footprint(grid)
    times = [_dt(f["datetime"]) for f in frames]
    interval: list[dt.datetime | None] = [min(times), max(times)] if times else [None, None]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval]))
    credit = _credit([t.year for t in times])
    coll = pystac.Collection(
        id=site.id,
        title=f"scarmon products: {site.display_name}",
        description=(
            f"Landslide scar of site {site.display_name} tracked in Sentinel-2 L2A NDVI: per-frame masks "
            "(COG), outlines, quicklooks; the area series, outlines of all frames and plots. "
            f"{credit}. Columns and fields: docs/products.md."
        ),
        extent=extent,
        license="other",
        keywords=["landslide", "sentinel-2", "ndvi", "scar", "copernicus"],
        providers=[
            pystac.Provider(name=p["name"], roles=list(p["roles"]), url=p.get("url"), description=p.get("description"))
            for p in PROVIDERS
        ],
        summaries=pystac.Summaries(
            {"constellation": ["sentinel-2"], "proj:code": [f"EPSG:{grid.epsg}"], "gsd": [grid.resolution]}
        ),
    )
    up = "../"
    files = index.get("files", {})
    typed = {
        "series_csv": ("text/csv", "Area series (CSV)"),
        "series_json": (JSON, "Area series (JSON)"),
        "polygons_geojson": (GEOJSON, "Scar outlines of all frames (lon/lat)"),
        "polygons_parquet": ("application/vnd.apache.parquet", "Scar outlines of all frames (GeoParquet, UTM)"),
    }
    for name, rel in files.items():
        mt, title = typed.get(name, (None, name))
        coll.add_asset(name, pystac.Asset(up + rel, title=title, media_type=mt, roles=["data"]))
    for name, rel in index.get("plots", {}).items():
        coll.add_asset(
            f"plot_{name}", pystac.Asset(up + rel, title=name.replace("_", " "), media_type=PNG, roles=["visual"])
        )
    coll.add_asset(
        "products_index",
        pystac.Asset(
            up + "products/index.json", title="Products index (dashboard)", media_type=JSON, roles=["metadata"]
        ),
    )
    coll.add_link(
        pystac.Link(
            "license", LICENSE_URL, media_type="text/html", title="Legal notice on the use of Copernicus Sentinel data"
        )
    )
    for rel, href in (("root", "../../" + keys.ROOT_CATALOG), ("parent", "../../" + keys.ROOT_CATALOG)):
        coll.add_link(pystac.Link(rel, href, media_type=JSON))
    for f in frames:
        coll.add_link(pystac.Link("item", f"items/{f['date']}_{f['scene_id']}.json", media_type=GEOJSON))
    doc: dict[str, Any] = coll.to_dict(include_self_link=False, transform_hrefs=False)
    return doc


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


class Writer(Protocol):
    """What write_stac needs of scarmon.products.publish's writer: puts that are counted."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def put_if_changed(self, key: str, data: bytes, content_type: str) -> bool: ...


def _asset_files(store: Store, site_id: str, frame: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("mask", "polygon", "quicklook", "ndvi"):
        rel = frame.get(name)
        if not rel:
            continue
        try:
            out[name] = file_fields(store.get(f"{site_id}/{rel}"))
        except KeyMissing:
            raise StacError(
                f"site {site_id}: asset {name} of {frame['scene_id']} is missing: "
                f"{store.url(f'{site_id}/{rel}')}; publish again"
            ) from None
    return out


def write_stac(
    site: Site,
    store: Store,
    manifest: Manifest,
    index: Mapping[str, Any],
    old_index: Mapping[str, Any] | None,
    *,
    writer: Writer,
) -> int:
    """Write the items of changed frames, the collection and the root catalog entry; returns the items written."""
    if manifest.grid is None:
        raise StacError(f"site {site.id}: no grid in the sequence yet, nothing to describe")
    grid = SiteGrid.from_dict(manifest.grid)
    old = {f["scene_id"]: f for f in (old_index or {}).get("frames", [])} if (old_index or {}).get("stac") else {}
    written = 0
    for frame in index["frames"]:
        prev = old.get(frame["scene_id"])
        if prev is not None and prev.get("row_tag") == frame["row_tag"] and prev.get("mask_tag") == frame["mask_tag"]:
            continue
        key = keys.stac_item(site.id, frame)
        doc = build_item(site.id, frame, grid, _asset_files(store, site.id, frame))
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
            cat = pystac.Catalog(
                id=ROOT_CATALOG_ID,
                title="scarmon landslide scar products",
                description="Products of every site monitored by scarmon, one collection per site.",
            )
            cat.add_link(pystac.Link("root", "./" + keys.ROOT_CATALOG, media_type=JSON))
            doc = cat.to_dict(include_self_link=False, transform_hrefs=False)
        children = [ln for ln in doc.get("links", []) if ln.get("rel") == "child"]
        if any(ln.get("href") == href and ln.get("title") == title for ln in children):
            return None
        links = [ln for ln in doc.get("links", []) if not (ln.get("rel") == "child" and ln.get("href") == href)]
        new = {**doc, "links": [*links, {"rel": "child", "href": href, "type": JSON, "title": title}]}
        validate(new, where=keys.ROOT_CATALOG)
        return new

    update_document(
        store,
        keys.ROOT_CATALOG,
        change,
        parse=_parse_root,
        dump=_dumps,
        what="root STAC catalog",
        content_type=JSON,
        max_attempts=max_attempts,
    )


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


__all__ = [
    "EXTENSIONS",
    "StacError",
    "build_collection",
    "build_item",
    "file_fields",
    "source_item_url",
    "validate",
    "validate_store",
    "write_stac",
]
