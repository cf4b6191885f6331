"""A small tracked site built in seconds, for the products, STAC, dashboard and UI tests (no demo run needed).

`build_site(store)` appends synthetic NDVI frames (a growing elliptical scar on seasonal vegetation, a jump after a
'failure', a few cloudy frames) to a store through the real sequence code, tracks them with the real tracker and
writes an alert history shaped like scarmon.alerts.history's. The helpers here are imported by the test modules.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from scarmon.grid import site_grid
from scarmon.ingest.frames import encode_ndvi, encode_png
from scarmon.site import Site, parse_site
from scarmon.store.backends import LocalStore, Store
from scarmon.store.sequence import FrameEntry, append
from scarmon.tracking.pipeline import track_site

LON, LAT = 96.0, 31.1
SITE_DOC = {
    "id": "test-slide",
    "name": "Test slide",
    "aoi": {
        "type": "Polygon",
        "coordinates": [
            [
                [LON - 0.002, LAT - 0.0017],
                [LON + 0.002, LAT - 0.0017],
                [LON + 0.002, LAT + 0.0017],
                [LON - 0.002, LAT + 0.0017],
                [LON - 0.002, LAT - 0.0017],
            ]
        ],
    },
    "prompts": [
        {"lon": LON, "lat": LAT, "label": 1, "date": "2021-06-05"},
        {"lon": LON + 0.0015, "lat": LAT + 0.0012, "label": 0, "date": "2021-06-05"},
    ],
    "resolution_m": 2,
    "start": "2021-06-01",
}
FIRST = dt.date(2021, 6, 5)
STEP_DAYS = 25
N_FRAMES = 30


def make_site(doc: dict | None = None) -> Site:
    return parse_site(json.loads(json.dumps(doc or SITE_DOC)), "<test site>")


def write_site_file(path: Path, doc: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(doc or SITE_DOC, sort_keys=False))
    return path


def frame_dates(n: int = N_FRAMES) -> list[dt.date]:
    return [FIRST + dt.timedelta(days=STEP_DAYS * i) for i in range(n)]


def _ndvi(grid, date: dt.date, k: int, rng: np.random.Generator, lon: float = LON, lat: float = LAT) -> np.ndarray:
    h, w = grid.shape
    cx, cy = grid.lonlat_to_pixel(lon, lat)
    yy, xx = np.mgrid[0:h, 0:w]
    growth = 1.0 + 0.01 * k + (0.45 if k >= 16 else 0.0)  # creep, then a failure at frame 16
    rx, ry = 18 * growth, 12 * growth
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    season = 0.62 + 0.13 * np.cos(2 * np.pi * (date.timetuple().tm_yday - 200) / 365.0)
    ndvi = season + rng.normal(0, 0.04, size=(h, w))
    ndvi[inside] = 0.03 + rng.normal(0, 0.02, size=int(inside.sum()))
    return ndvi.astype(np.float32)


def append_frames(store: Store, site: Site, dates: list[dt.date], *, first_index: int = 0, seed: int = 5) -> None:
    grid = site_grid(site.polygon, site.resolution_m)
    rng = np.random.default_rng(seed + first_index)
    frames, data = [], {}
    for k, d in enumerate(dates, first_index):
        scene = f"S2A_{d:%Y%m%d}_R033"
        ndvi = _ndvi(grid, d, k, rng, site.prompts[0].lon, site.prompts[0].lat)
        clear = 0.85 if k % 7 == 3 else 1.0
        if clear < 1:
            ndvi[: ndvi.shape[0] // 6] = np.nan  # a cloud band, outside the scar
        nkey, vkey = f"{site.id}/frames/{d}_{scene}.tif", f"{site.id}/frames/{d}_{scene}.png"
        data[nkey] = encode_ndvi(ndvi, grid)
        gray = np.clip((np.nan_to_num(ndvi, nan=-0.2) + 0.2) / 1.0 * 255, 0, 255).astype(np.uint8)
        data[vkey] = encode_png(gray)
        frames.append(
            FrameEntry(
                date=d.isoformat(),
                scene_id=scene,
                datetime=f"{d}T04:17:01Z",
                item_ids=(f"S2A_MSIL2A_{d:%Y%m%d}T041701_R033_T47RKQ",),
                processing_baseline="05.10",
                coverage=1.0,
                clear_fraction=clear,
                objects={"ndvi": nkey, "video": vkey},
            )
        )
    append(store, site.id, frames=frames, rejections=[], grid=grid.to_dict(), data=data)


ALERTS = [
    {
        "site": "test-slide",
        "date": "2022-12-01",
        "scene_id": "S2A_20221201_R033",
        "event": "provisional",
        "state": "provisional",
        "level": "watch",
        "area_m2": 3100.0,
        "baseline_m2": 2100.0,
    },
    {
        "site": "test-slide",
        "date": "2023-01-20",
        "scene_id": "S2A_20230120_R033",
        "event": "confirmed",
        "state": "confirmed",
        "level": "warning",
        "area_m2": 3200.0,
        "baseline_m2": 2100.0,
    },
]


def write_alerts(store: Store, site_id: str = "test-slide") -> None:
    store.put(f"{site_id}/alerts.jsonl", "".join(json.dumps({**a, "site": site_id}) + "\n" for a in ALERTS).encode())
    store.put(
        f"{site_id}/alerts/state.json",
        json.dumps({"site": site_id, "status": "confirmed", "level": 2, "level_name": "warning"}).encode(),
    )


def site_doc_at(site_id: str, name: str, lon: float, lat: float) -> dict:
    """The test site moved to (lon, lat) under another id (same shapes, same prompts relative to the centre)."""
    doc = json.loads(json.dumps(SITE_DOC))
    dx, dy = lon - LON, lat - LAT
    doc["id"], doc["name"] = site_id, name
    doc["aoi"]["coordinates"] = [[[x + dx, y + dy] for x, y in doc["aoi"]["coordinates"][0]]]
    for p in doc["prompts"]:
        p["lon"], p["lat"] = p["lon"] + dx, p["lat"] + dy
    return doc


def build_site(store: Store, *, n_frames: int = N_FRAMES, alerts: bool = True, doc: dict | None = None) -> Site:
    site = make_site(doc)
    append_frames(store, site, frame_dates(n_frames))
    track_site(site, store)
    if alerts:
        write_alerts(store, site.id)
    return site


_BUILT: dict[str, Path] = {}  # session fixtures imported by several modules: build each store once


@pytest.fixture(scope="session")
def tracked_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with the test site appended and tracked (built once per session; copy before changing it)."""
    if "tracked" not in _BUILT:
        root = tmp_path_factory.mktemp("tracked") / "store"
        build_site(LocalStore(root))
        _BUILT["tracked"] = root
    return _BUILT["tracked"]


@pytest.fixture(scope="session")
def published_store_dir(tmp_path_factory: pytest.TempPathFactory, tracked_store_dir: Path) -> Path:
    """The tracked store with products published (read-only for tests: copy before changing it)."""
    from scarmon.products.publish import publish_site

    if "published" not in _BUILT:
        root = tmp_path_factory.mktemp("published") / "store"
        shutil.copytree(tracked_store_dir, root)
        publish_site(make_site(), LocalStore(root))
        _BUILT["published"] = root
    return _BUILT["published"]


def copy_store(src: Path, dst: Path) -> LocalStore:
    shutil.copytree(src, dst)
    return LocalStore(dst)


def test_support_builds_a_tracked_site(tracked_store_dir: Path) -> None:
    from scarmon.tracking.pipeline import read_series

    rows = read_series(LocalStore(tracked_store_dir), "test-slide")
    assert len(rows) == N_FRAMES
    assert rows[-1]["area_m2"] > 1.5 * rows[0]["area_m2"] > 0  # the scar grew, and was found
    assert any(r["low_confidence"] for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# browser (real headless Chromium through playwright; Debian `chromium`, never `playwright install`)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]


_BROWSER: list = []  # one Chromium per session, however many test modules import the fixture


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the session; skips (saying why) when chromium or playwright is missing.

    Test modules import this fixture, so pytest may instantiate it once per importing module: the first instance
    starts Chromium (playwright's sync API allows one driver per thread) and the others reuse it."""
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (.ci/install-system-packages.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing: pip install -r requirements/dev.txt")
    if _BROWSER:
        yield _BROWSER[0]
        return
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        _BROWSER.append(b)
        try:
            yield b
        finally:
            _BROWSER.clear()
            b.close()


@pytest.fixture
def page(browser, tmp_path: Path):
    """A fresh page that records console errors, failed requests and every URL it asked for."""
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = ctx.new_page()
    pg.errors, pg.requests = [], []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    try:
        yield pg
    finally:
        ctx.close()


class StaticServer:
    """`python -m http.server` on 127.0.0.1 (a random port) for a folder, in a thread."""

    def __init__(self, root: Path) -> None:
        import functools
        import http.server
        import threading

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):  # noqa: D401
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def screenshot_dir() -> Path:
    """Where browser tests leave screenshots for people to look at ($SCARMON_TEST_ARTIFACTS or a temp folder)."""
    import os
    import tempfile

    d = Path(os.environ.get("SCARMON_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "scarmon-test-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d
