"""The static dashboard in real headless Chromium: served from a store folder by a plain static HTTP server, and
from an S3 bucket (moto on loopback) over HTTP; an empty or broken site is shown plainly."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scarmon.products.publish import publish_failed, publish_site
from scarmon.store.backends import LocalStore, open_store
from tests.test_products_support import (N_FRAMES, SITE_DOC, StaticServer, browser, build_site,  # noqa: F401
                                         copy_store, make_site, page, published_store_dir, screenshot_dir,
                                         tracked_store_dir)


def _wait_loaded(page, frames: int) -> None:
    page.wait_for_function(f"document.getElementById('frame-date').textContent.includes('of {frames})')",
                           timeout=15000)
    page.wait_for_function("document.getElementById('quicklook').complete && "
                           "document.getElementById('quicklook').naturalWidth > 0", timeout=15000)


def test_dashboard_shows_the_site_and_the_slider_changes_the_frame(published_store_dir: Path, page) -> None:
    server = StaticServer(published_store_dir)
    try:
        page.goto(server.url + "/dashboard/index.html")
        _wait_loaded(page, N_FRAMES)
        # site list with its current alert level
        sites = page.locator("#sites li")
        assert sites.count() == 1
        assert "Test slide" in sites.first.inner_text() and "warning" in sites.first.inner_text()
        assert page.locator("#site-level").inner_text() == "alert level: warning"
        # newest frame first; the map shows its quicklook and boundary
        assert page.locator("#frame-date").inner_text().endswith(f"({N_FRAMES} of {N_FRAMES})")
        last_src = page.locator("#quicklook").get_attribute("src")
        last_d = page.locator("#boundary").get_attribute("d")
        assert last_src.endswith(".png") and last_d.startswith("M") and last_d.count("Z") >= 1
        assert page.locator("#boundary-first").get_attribute("d").startswith("M")
        # area chart: one point per frame, hollow for low confidence, alert lines
        assert page.locator("#chart circle.pt").count() == N_FRAMES
        assert page.locator("#chart circle.pt.low").count() >= 3
        assert page.locator("#chart line.alert").count() == 2
        # alert list (newest first)
        rows = page.locator("#alerts tbody tr")
        assert rows.count() == 2 and "warning" in rows.first.inner_text() and "confirmed" in rows.first.inner_text()
        page.screenshot(path=str(screenshot_dir() / "dashboard-local-last.png"), full_page=True)

        # the slider changes the frame: date, quicklook, boundary, chart selection
        page.locator("#slider").fill("0")
        page.wait_for_function("document.getElementById('frame-date').textContent.startsWith('2021-06-05')")
        assert page.locator("#quicklook").get_attribute("src") != last_src
        first_d = page.locator("#boundary").get_attribute("d")
        assert first_d != last_d and first_d == page.locator("#boundary-first").get_attribute("d")
        assert page.locator("#frame-confidence").inner_text() == "normal"
        # a cloudy frame shows its low confidence and why
        page.locator("#slider").fill("3")
        page.wait_for_function("document.getElementById('frame-date').textContent.includes('(4 of')")
        assert page.locator("#frame-confidence").inner_text().startswith("low: clear fraction 0.85")
        page.wait_for_function("document.getElementById('quicklook').naturalWidth > 0")
        page.keyboard.press("ArrowRight")  # keyboard: next frame (focus is on the slider, which moves it too)
        page.wait_for_function("document.getElementById('frame-date').textContent.includes('(5 of')")
        assert re.search(r"#site=test-slide&date=\d{4}-\d\d-\d\d$", page.url)
        # a point on the chart selects its frame
        page.locator("#chart circle.pt").nth(10).click()
        page.wait_for_function("document.getElementById('frame-date').textContent.includes('(11 of')")
        assert page.locator("#frames tbody tr.selected").count() == 1
        page.screenshot(path=str(screenshot_dir() / "dashboard-local-frame11.png"), full_page=True)
        # downloads link to products that exist
        hrefs = page.locator("#downloads a").evaluate_all("els => els.map(e => e.href)")
        assert any(h.endswith("polygons.geojson") for h in hrefs) and any(h.endswith("collection.json") for h in hrefs)
        for h in hrefs:
            assert page.request.get(h).ok, h
        assert page.errors == []
        assert all(u.startswith(server.url) or u.startswith("data:") for u in page.requests), page.requests
    finally:
        server.close()


def test_dashboard_served_from_s3_over_http(s3_uri: str, page, moto_endpoint: str) -> None:
    import boto3

    from scarmon.products.publish import s3_public_read_policy

    store = open_store(s3_uri)
    site = build_site(store, n_frames=6)
    report = publish_site(site, store)
    # browsers read the bucket anonymously: the policy a deployment applies (documented in scarmon.products.publish)
    boto3.client("s3", endpoint_url=moto_endpoint).put_bucket_policy(Bucket=store.bucket,
                                                                     Policy=s3_public_read_policy(store))
    url = store.url("dashboard/index.html")
    assert url.startswith(moto_endpoint) and report.dashboard_url.startswith(url)
    page.goto(report.dashboard_url)
    _wait_loaded(page, 6)
    assert "Test slide" in page.locator("#sites li").first.inner_text()
    assert page.locator("#chart circle.pt").count() == 6
    src = page.locator("#quicklook").get_attribute("src")
    page.locator("#slider").fill("1")
    page.wait_for_function("document.getElementById('frame-date').textContent.includes('(2 of 6)')")
    assert page.locator("#quicklook").get_attribute("src") != src
    page.wait_for_function("document.getElementById('quicklook').naturalWidth > 0")
    page.screenshot(path=str(screenshot_dir() / "dashboard-s3.png"), full_page=True)
    assert page.errors == []
    assert all(u.startswith(moto_endpoint) or u.startswith("data:") for u in page.requests)


def test_empty_and_broken_sites_are_shown_plainly(tracked_store_dir: Path, tmp_path: Path, page) -> None:
    store = copy_store(tracked_store_dir, tmp_path / "store")
    publish_site(make_site(), store)
    publish_site(make_site({**SITE_DOC, "id": "empty-site", "name": "Empty site"}), store)
    broken = make_site({**SITE_DOC, "id": "broken-site", "name": "Broken site"})
    publish_site(broken, store)
    store.put("broken-site/products/index.json", b"{ this is not json")
    publish_failed(store, broken, "disk full while writing products")
    server = StaticServer(tmp_path / "store")
    try:
        page.goto(server.url + "/dashboard/index.html#site=empty-site")
        page.wait_for_function("!document.getElementById('site-status').hidden && "
                               "!document.getElementById('site-status').textContent.includes('Loading')")
        assert "No frames yet" in page.locator("#site-status").inner_text()
        assert page.locator("#site-body").is_hidden()
        page.locator("#sites li[data-site=broken-site]").click()
        page.wait_for_function("document.getElementById('site-status').textContent.includes('could not be loaded')")
        text = page.locator("#site-status").inner_text()
        assert "disk full" in text and "not valid JSON" in text
        assert "publish failed" in page.locator("#sites li[data-site=broken-site]").inner_text()
        page.screenshot(path=str(screenshot_dir() / "dashboard-broken-site.png"), full_page=True)
        page.locator("#sites li[data-site=test-slide]").click()  # the good site still works
        _wait_loaded(page, N_FRAMES)
        assert page.locator("#site-status").is_hidden()
        assert page.errors == []
    finally:
        server.close()


def test_a_store_without_sites_says_so(tmp_path: Path, page) -> None:
    from scarmon.products.publish import publish_dashboard

    store = LocalStore(tmp_path / "store")
    publish_dashboard(store)
    server = StaticServer(tmp_path / "store")
    try:
        page.goto(server.url + "/dashboard/index.html")
        page.wait_for_function("document.getElementById('global-status').textContent.length > 0")
        assert "Could not load the list of sites" in page.locator("#global-status").inner_text()
        store.put("sites.json", json.dumps({"sites": []}).encode())
        page.reload()
        page.wait_for_function("document.getElementById('global-status').textContent.length > 0")
        assert "No sites published" in page.locator("#global-status").inner_text()
        assert page.errors == []
    finally:
        server.close()
