"""`scarmon ui` in real headless Chromium: pick a frame, click positive/negative points, submit -> corrections
stored through scarmon.tracking.corrections (as `scarmon refine`), tracking re-run, products updated. Loopback + token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scarmon.grid import SiteGrid
from scarmon.products.publish import publish_site
from scarmon.store import keys
from scarmon.store.sequence import load_manifest
from scarmon.tracking.corrections import list_corrections
from scarmon.ui.server import make_server
from tests.test_products_support import (  # noqa: F401 (browser and tracked_store_dir are fixtures)
    browser,
    copy_store,
    make_site,
    screenshot_dir,
    tracked_store_dir,
    write_site_file,
)

SITE = "test-slide"


@pytest.fixture
def page(browser):
    """Playwright's wait_for_function evaluates strings, which the UI's Content-Security-Policy (no eval) forbids:
    bypass the CSP for the test driver only (the page's own scripts are inline, allowed by that CSP)."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    pg = ctx.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    try:
        yield pg
    finally:
        ctx.close()


@pytest.fixture
def ui(tracked_store_dir: Path, tmp_path: Path):
    store = copy_store(tracked_store_dir, tmp_path / "store")
    publish_site(make_site(), store)
    server = make_server(write_site_file(tmp_path / "site.yaml"), store).start()
    try:
        yield server, store
    finally:
        server.stop()


def test_click_and_submit_stores_corrections_and_retracks(ui, page) -> None:
    server, store = ui
    assert server.url.startswith("http://127.0.0.1:") and "token=" in server.url
    page.goto(server.url)
    page.wait_for_function("document.getElementById('frame-select').options.length > 0")
    page.wait_for_function("document.getElementById('frame').naturalWidth > 0")
    page.wait_for_function("document.getElementById('mask').getAttribute('d').startsWith('M')")
    page.select_option("#frame-select", "12")
    manifest, _ = load_manifest(store, SITE)
    date = manifest.frames[12].date
    page.wait_for_function(f"document.getElementById('frame-info').textContent.startsWith('{date}')")
    page.wait_for_function("document.getElementById('mask').getAttribute('d').startsWith('M')")
    box = page.locator("#overlay").bounding_box()
    grid = SiteGrid.from_dict(manifest.grid)
    # positive point at 40 % / 45 %, negative (radio) at 80 % / 20 %, another negative by shift-click
    page.mouse.click(box["x"] + 0.40 * box["width"], box["y"] + 0.45 * box["height"])
    page.check("#mode-neg")
    page.mouse.click(box["x"] + 0.80 * box["width"], box["y"] + 0.20 * box["height"])
    page.check("#mode-pos")
    page.keyboard.down("Shift")
    page.mouse.click(box["x"] + 0.15 * box["width"], box["y"] + 0.85 * box["height"])
    page.keyboard.up("Shift")
    assert page.locator("#point-list li").count() == 3
    assert page.locator("#points circle.pos").count() == 1 and page.locator("#points circle.neg").count() == 2
    page.screenshot(path=str(screenshot_dir() / "ui-points.png"), full_page=True)
    revision = json.loads(store.get(keys.products_index(SITE)))["revision"]
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stored')", timeout=60000)
    assert "stored 3 correction(s) on " + date in page.locator("#status").inner_text()
    assert "re-tracked" in page.locator("#status").inner_text()
    page.wait_for_function("document.getElementById('n-corrections').textContent === '3'")
    assert page.locator("#old-points circle.old").count() == 3  # stored corrections drawn on their frame
    page.screenshot(path=str(screenshot_dir() / "ui-submitted.png"), full_page=True)

    corr = list_corrections(store, SITE)
    assert [c["label"] for c in corr] == [1, 0, 0] and {c["date"] for c in corr} == {date}
    for c, (fx, fy) in zip(corr, [(0.40, 0.45), (0.80, 0.20), (0.15, 0.85)], strict=True):
        col, row = grid.lonlat_to_pixel(c["lon"], c["lat"])
        assert abs(col - fx * grid.width) < 1.5 and abs(row - fy * grid.height) < 1.5  # the clicked pixel
    manifest, _ = load_manifest(store, SITE)
    assert manifest.dirty_from is None  # re-tracked from the corrected frame
    assert "products" in page.locator("#status").inner_text()  # re-published (unchanged if the masks were)
    assert json.loads(store.get(keys.products_index(SITE)))["revision"] in (revision, revision + 1)
    assert page.locator("#n-corrections").inner_text() == "3"
    assert page.errors == []


def test_requests_without_the_token_or_from_another_host_are_refused(ui) -> None:
    server, _ = ui
    base = f"http://127.0.0.1:{server.port}"
    for url, headers in (
        (base + "/", {}),
        (base + "/api/frames?token=wrong", {}),
        (base + f"/api/frames?token={server.token}", {"Host": f"evil.example:{server.port}"}),
    ):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert e.value.code == 403
    ok = urllib.request.urlopen(base + f"/api/frames?token={server.token}", timeout=10)
    assert json.loads(ok.read())["site"] == SITE
    assert "default-src 'self'" in ok.headers["Content-Security-Policy"]
    assert server.server_address[0] == "127.0.0.1"


def test_bad_submissions_are_answered_plainly(ui) -> None:
    server, store = ui

    def post(doc):
        req = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/corrections",
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json", "X-Scarmon-Token": server.token},
        )
        try:
            return urllib.request.urlopen(req, timeout=30).status, None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())["error"]

    assert post({"date": "2021-06-06", "points": [{"col": 5, "row": 5, "label": 1}]}) == (
        400,
        post({"date": "2021-06-06", "points": [{"col": 5, "row": 5, "label": 1}]})[1],
    )
    code, err = post({"date": "2021-06-06", "points": [{"col": 5, "row": 5, "label": 1}]})
    assert code == 400 and "no frame on 2021-06-06" in err
    code, err = post({"date": "2021-06-05", "points": []})
    assert code == 400 and "points" in err
    code, err = post({"date": "2021-06-05", "points": [{"col": 1e6, "row": 5, "label": 1}]})
    assert code == 400 and "outside the frame" in err
    assert list_corrections(store, SITE) == []
