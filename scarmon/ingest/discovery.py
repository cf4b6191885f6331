"""Discovery: which Sentinel-2 L2A items cover a site in a date window.

All catalog HTTP lives here. Two kinds of source behind one `Catalog` protocol:
a STAC API (Planetary Computer by default, Earth Search, any pgstac server) searched with pystac-client and
retries with backoff, or a static STAC ItemCollection / Catalog JSON (path or URL) filtered locally.
Items come back as plain dicts: pystac ≥ 1.12 rewrites `proj:epsg` to `proj:code` and `Item.to_dict()` may
fetch the root link, neither of which we want.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlparse

import requests
from shapely.errors import ShapelyError
from shapely.geometry import Polygon, mapping, shape
from urllib3 import Retry

from scarmon import defaults
from scarmon.dates import optional_utc_datetime
from scarmon.errors import ScarmonError, is_transient, transient

log = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)


class CatalogError(ScarmonError, RuntimeError):
    """The catalog could not be searched; the message names the URL and what to do. Nothing was stored."""


class Catalog(Protocol):
    source: str
    malformed: list[tuple[str, str]]  # (item id or position, why) of items the last search left out

    def search(self, *, aoi: Polygon, start: dt.datetime, end: dt.datetime, max_cloud: float) -> list[dict[str, Any]]:
        """Items intersecting `aoi` acquired in [start, end], with scene `eo:cloud_cover` ≤ max_cloud where known."""
        ...


def open_catalog(source: str | None = None, *, collection: str | None = None) -> Catalog:
    """A catalog from a `--catalog` value: STAC API URL, or path/URL of a static ItemCollection/Catalog JSON."""
    source = source or defaults.CATALOG
    if _is_static(source):
        return StaticCatalog(source, collection=collection)
    return StacApiCatalog(source, collection=collection or _collection_for(source))


def _is_static(source: str) -> bool:
    parsed = urlparse(source)
    return parsed.scheme not in ("http", "https") or parsed.path.endswith(".json")


def _collection_for(url: str) -> str:
    host = urlparse(url).hostname or ""
    return next((c for h, c in defaults.KNOWN_COLLECTIONS.items() if host.endswith(h)), defaults.COLLECTION)


def _retry() -> Retry:
    # POST searches must be retried too (urllib3 skips POST by default).
    return Retry(
        total=defaults.HTTP_RETRIES,
        backoff_factor=defaults.HTTP_BACKOFF_S,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=True,
    )


class StacApiCatalog:
    def __init__(self, url: str, *, collection: str):
        self.source = url
        self.collection = collection
        self.malformed: list[tuple[str, str]] = []
        self._client: Any = None

    def _open(self) -> Any:
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO

        if self._client is None:
            io = StacApiIO(max_retries=_retry(), timeout=defaults.HTTP_TIMEOUT_S)
            try:
                self._client = Client.open(self.source, stac_io=io, timeout=defaults.HTTP_TIMEOUT_S)
            except Exception as exc:
                raise transient(
                    CatalogError(
                        f"cannot open the STAC API at {self.source}: {_reason(exc)}. Check the URL and your network, or "
                        "pass --catalog with another STAC API or a static JSON."
                    ),
                    _network(exc),
                ) from exc
        return self._client

    def search(self, *, aoi: Polygon, start: dt.datetime, end: dt.datetime, max_cloud: float) -> list[dict[str, Any]]:
        client = self._open()
        kwargs: dict[str, Any] = dict(
            collections=[self.collection], intersects=mapping(aoi), datetime=(start, end), limit=defaults.PAGE_SIZE
        )
        if client.conforms_to("QUERY"):
            kwargs["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
        items: list[dict[str, Any]] = []
        pages = 0
        try:
            for page in client.search(**kwargs).pages_as_dicts():
                pages += 1
                features = page.get("features", []) if isinstance(page, dict) else None
                if not isinstance(features, list):
                    raise CatalogError(
                        f"page {pages} of the search is not an ItemCollection ('features' is "
                        f"{type(features).__name__}, not a list)"
                    )
                items.extend(features)
        except Exception as exc:
            raise transient(
                CatalogError(
                    f"searching {self.source} (collection {self.collection}) failed after {pages} page(s) and "
                    f"{defaults.HTTP_RETRIES} retries: {_reason(exc)}. Nothing was stored; the next run will search "
                    "again."
                ),
                _network(exc),
            ) from exc
        log.info("%s: %d items in %d page(s)", self.source, len(items), pages)
        return _filter(items, aoi, start, end, max_cloud, self.collection, self.malformed)


class StaticCatalog:
    def __init__(self, source: str, *, collection: str | None = None):
        self.source = source
        self.collection = collection
        self.malformed: list[tuple[str, str]] = []

    def search(self, *, aoi: Polygon, start: dt.datetime, end: dt.datetime, max_cloud: float) -> list[dict[str, Any]]:
        self.malformed = []
        return _filter(list(self._items()), aoi, start, end, max_cloud, self.collection, self.malformed)

    def _items(self) -> Iterable[Any]:
        doc = _read_json(self.source)
        kind = doc.get("type")
        if kind == "FeatureCollection":
            features = doc.get("features", [])
            if not isinstance(features, list):
                raise CatalogError(
                    f"{self.source}: 'features' is {type(features).__name__}, not a list of items; "
                    "fix the file or pass --catalog with another source"
                )
            return [_absolute_hrefs(f, self.source) for f in features]
        if kind == "Feature":
            return [_absolute_hrefs(doc, self.source)]
        if kind in ("Catalog", "Collection"):
            return self._walk(doc, self.source)
        raise CatalogError(f"{self.source}: not a STAC ItemCollection, Item or Catalog (type={kind!r})")

    def _walk(self, doc: dict[str, Any], base: str) -> Iterable[Any]:
        links = doc.get("links", [])
        for link in links if isinstance(links, list) else []:
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                continue
            href = _join(base, link["href"])
            if link.get("rel") == "item":
                yield _absolute_hrefs(_read_json(href), href)
            elif link.get("rel") == "child":
                yield from self._walk(_read_json(href), href)


def _filter(
    items: list[Any],
    aoi: Polygon,
    start: dt.datetime,
    end: dt.datetime,
    max_cloud: float,
    collection: str | None,
    malformed: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    """Filter locally too: static catalogs have no server, and APIs without `query` skip the cloud prefilter.

    A malformed item is left out and recorded in `malformed` (one bad item never stops a run)."""
    from scarmon.ingest.scenes import item_problem

    out = []
    for n, item in enumerate(items):
        if problem := item_problem(item):
            name = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else f"feature #{n}"
            log.warning("catalog item left out: %s", problem)
            malformed.append((str(name), problem))
            continue
        try:
            props = item["properties"]
            when = optional_utc_datetime(props.get("datetime"))
            cloud = props.get("eo:cloud_cover")
            if collection and item.get("collection") not in (None, collection):
                continue
            if when is None or not (start <= when <= end):
                continue
            if isinstance(cloud, (int, float)) and not isinstance(cloud, bool) and cloud > max_cloud:
                continue
            if item.get("geometry") and not shape(item["geometry"]).intersects(aoi):
                continue
        except (TypeError, ValueError, KeyError, AttributeError, ShapelyError) as exc:
            log.warning("catalog item %s left out: %s", item.get("id"), exc)
            malformed.append((str(item.get("id")), f"item {item.get('id')}: {_reason(exc)}"))
            continue
        out.append(item)
    return out


def _read_json(source: str) -> dict[str, Any]:
    try:
        if urlparse(source).scheme in ("http", "https"):
            session = requests.Session()
            session.mount("http://", requests.adapters.HTTPAdapter(max_retries=_retry()))
            session.mount("https://", requests.adapters.HTTPAdapter(max_retries=_retry()))
            resp = session.get(source, timeout=defaults.HTTP_TIMEOUT_S)
            resp.raise_for_status()
            doc = resp.json()
        else:
            path = Path(source.removeprefix("file://"))
            doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, requests.RequestException) as exc:
        raise transient(
            CatalogError(f"cannot read the static catalog {source}: {_reason(exc)}"), _network(exc)
        ) from exc
    if not isinstance(doc, dict):
        raise CatalogError(f"{source}: the document is a JSON {type(doc).__name__}, not a STAC object")
    return doc


def _join(base: str, href: str) -> str:
    if urlparse(href).scheme or href.startswith("/"):
        return href
    if urlparse(base).scheme in ("http", "https"):
        return urljoin(base, href)
    return str((Path(base.removeprefix("file://")).parent / href).resolve())


def _absolute_hrefs(item: Any, base: str) -> Any:
    assets = item.get("assets") if isinstance(item, dict) else None
    for asset in assets.values() if isinstance(assets, dict) else ():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = _join(base, asset["href"])
    return item


def _network(exc: BaseException) -> bool:
    """A failure that may pass: connection errors, timeouts, HTTP 429/5xx (retried here already, and again later)."""
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return is_transient(exc) or status in RETRY_STATUS


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words: the OS error of a failed connection ("[Errno 111] Connection refused")
    instead of urllib3's nested pool/retry repr; else the message, cut at 300 characters."""
    text = str(exc) or type(exc).__name__
    if "ConnectionPool(" in text and (m := _OS_ERROR.search(text)):  # requests/urllib3, also as wrapped by pystac
        return m.group(0).rstrip(" .")
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text and "ConnectionPool(" in text:
        return f"no answer within {defaults.HTTP_TIMEOUT_S:g} s"
    return text if len(text) < 300 else text[:300] + "…"


_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")]+")
