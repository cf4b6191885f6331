"""The static map dashboard in real headless Chromium: served from a store folder by a plain static HTTP server, and
from an S3 bucket (moto on loopback) over HTTP; the overview shows every site, the site map places the outline at the
site's coordinates, the slider moves it; no basemap (or an unreachable one) still works; empty or broken sites are
shown plainly."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from scarmon.products.publish import publish_dashboard, publish_failed, publish_site
from scarmon.store.backends import LocalStore, open_store
from tests.test_products_support import (  # noqa: F401
    LAT,
    LON,
    N_FRAMES,
    SITE_DOC,
    StaticServer,
    browser,
    build_site,
    copy_store,
    make_site,
    page,
    published_store_dir,
    screenshot_dir,
    site_doc_at,
    tracked_store_dir,
)


def _wait_loaded(page, frames: int) -> None:
    page.wait_for_function(f"document.getElementById('frame-date').textContent.includes('of {frames})')", timeout=15000)
    page.wait_for_function(
        "document.getElementById('map').getAttribute('data-outline-date') === "
        "document.getElementById('frame-date').textContent.slice(0, 10)",
        timeout=15000,
    )
    page.wait_for_function(
        "(() => { const img = document.querySelector('#map img.frame-image'); "
        "return img && img.complete && img.naturalWidth > 0; })()",
        timeout=15000,
    )


def _outline_geo(page) -> dict:
    """The drawn outline layer's bounds (lon/lat) and its SVG path's box on screen, with the AOI's box on screen."""
    return page.evaluate(
        """() => {
        const m = scarmon.maps.site, b = m.current.getBounds(), aoi = m.aoi.getBounds();
        const r = document.querySelector('#map path.outline-current').getBoundingClientRect();
        const box = document.getElementById('map').getBoundingClientRect();
        const nw = m.latLngToContainerPoint(aoi.getNorthWest()), se = m.latLngToContainerPoint(aoi.getSouthEast());
        const c = m.latLngToContainerPoint(L.latLng(LAT, LON));
        return {west: b.getWest(), east: b.getEast(), south: b.getSouth(), north: b.getNorth(),
                path: [r.left - box.left, r.top - box.top, r.right - box.left, r.bottom - box.top],
                aoi: [nw.x, nw.y, se.x, se.y], site: [c.x, c.y], zoom: m.getZoom()};
    }""".replace("LAT", str(LAT)).replace("LON", str(LON))
    )


def test_site_map_places_the_outline_at_the_site_and_the_slider_moves_it(published_store_dir: Path, page) -> None:
    server = StaticServer(published_store_dir)
    aoi = SITE_DOC["aoi"]["coordinates"][0]
    w, e = min(p[0] for p in aoi), max(p[0] for p in aoi)
    s, n = min(p[1] for p in aoi), max(p[1] for p in aoi)
    try:
        page.goto(server.url + "/dashboard/index.html#site=test-slide")
        _wait_loaded(page, N_FRAMES)
        assert "Test slide" in page.locator("#sites li").first.inner_text()
        assert page.locator("#site-level").inner_text() == "alert level: warning"
        assert "31.10000° N, 96.00000° E" in page.locator("#site-meta").inner_text()
        assert "last clear image 2023-05-31" in page.locator("#health-clear").inner_text()
        assert page.locator("#frame-date").inner_text().endswith(f"({N_FRAMES} of {N_FRAMES})")
        # the outline of the newest frame: in lon/lat inside the AOI, around the scar's centre (the site's prompt)
        last = _outline_geo(page)
        assert w < last["west"] < last["east"] < e and s < last["south"] < last["north"] < n, last
        assert (
            abs((last["west"] + last["east"]) / 2 - LON) < 2e-4
            and abs((last["south"] + last["north"]) / 2 - LAT) < 2e-4
        )
        # ... and drawn there on screen: the path's box lies inside the AOI's box, centred on the site's point
        px, ax = last["path"], last["aoi"]
        assert ax[0] < px[0] < px[2] < ax[2] and ax[1] < px[1] < px[3] < ax[3], last
        assert abs((px[0] + px[2]) / 2 - last["site"][0]) < 12 and abs((px[1] + px[3]) / 2 - last["site"][1]) < 12
        # the georeferenced frame image covers the AOI
        img = page.locator("#map img.frame-image").bounding_box()
        box = page.locator("#map").bounding_box()
        assert img["x"] - box["x"] <= ax[0] + 1 and img["x"] - box["x"] + img["width"] >= ax[2] - 1
        # map furniture: scale bar, cursor coordinates, zoom
        assert re.search(r"\d+ m", page.locator("#map .leaflet-control-scale-line").inner_text())
        page.mouse.move(box["x"] + last["site"][0], box["y"] + last["site"][1])
        cursor = page.locator("#map-cursor").inner_text()
        lat, lon = map(float, re.findall(r"([\d.]+)°", cursor))
        assert abs(lat - LAT) < 5e-5 and abs(lon - LON) < 5e-5 and "N" in cursor and "E" in cursor
        # area chart: one point per frame, hollow for low confidence, alert lines, round tick labels
        assert page.locator("#chart circle.pt").count() == N_FRAMES
        assert page.locator("#chart circle.pt.low").count() >= 3
        assert page.locator("#chart line.alert").count() == 2
        ticks = [
            float(t.replace(",", ""))
            for t in page.locator("#chart text.ytick").evaluate_all("els => els.map(e => e.textContent)")
        ]
        steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
        assert ticks[0] == 0 and len(steps) == 1 and re.fullmatch(r"[125]0*", f"{steps.pop():g}"), ticks
        rows = page.locator("#alerts tbody tr")
        assert rows.count() == 2 and "warning" in rows.first.inner_text() and "confirmed" in rows.first.inner_text()
        page.screenshot(path=str(screenshot_dir() / "dashboard-site-last.png"), full_page=True)

        # the slider moves the outline and the image: the first frame's scar is smaller, inside the last one
        last_src = page.locator("#map img.frame-image").get_attribute("src")
        page.locator("#slider").fill("0")
        page.wait_for_function("document.getElementById('map').getAttribute('data-outline-date') === '2021-06-05'")
        first = _outline_geo(page)
        assert page.locator("#map img.frame-image").get_attribute("src") != last_src
        assert last["west"] < first["west"] < first["east"] < last["east"]
        assert last["south"] < first["south"] < first["north"] < last["north"]
        assert first["path"][2] - first["path"][0] < px[2] - px[0]
        assert page.locator("#frame-confidence").inner_text() == "normal"
        # a cloudy frame shows its low confidence and why
        page.locator("#slider").fill("3")
        page.wait_for_function("document.getElementById('frame-date').textContent.includes('(4 of')")
        assert page.locator("#frame-confidence").inner_text() == "low: 85 % of the site clear (at least 90 % needed)"
        page.keyboard.press("ArrowRight")  # keyboard: next frame (focus is on the slider, which moves it too)
        page.wait_for_function("document.getElementById('frame-date').textContent.includes('(5 of')")
        assert re.search(r"#site=test-slide&date=\d{4}-\d\d-\d\d$", page.url)
        # a point on the chart selects its frame
        page.locator("#chart circle.pt").nth(10).click()
        page.wait_for_function(
            "document.getElementById('map').getAttribute('data-outline-date') === "
            "document.getElementById('frame-date').textContent.slice(0, 10) && "
            "document.getElementById('frame-date').textContent.includes('(11 of')"
        )
        assert page.locator("#frames tbody tr.selected").count() == 1
        # a link to another date of the open site (as in an alert e-mail) jumps there
        page.evaluate("location.hash = 'site=test-slide&date=2021-06-30'")
        page.wait_for_function("document.getElementById('map').getAttribute('data-outline-date') === '2021-06-30'")
        assert page.locator("#frame-date").inner_text().startswith("2021-06-30 (2 of")
        zoom = first["zoom"]
        page.locator("#map .leaflet-control-zoom-in").click()
        page.wait_for_function(f"scarmon.maps.site.getZoom() > {zoom}")
        page.screenshot(path=str(screenshot_dir() / "dashboard-site-frame11-zoomed.png"), full_page=True)
        # downloads link to products that exist
        hrefs = page.locator("#downloads a").evaluate_all("els => els.map(e => e.href)")
        assert any(h.endswith("polygons.geojson") for h in hrefs) and any(h.endswith("collection.json") for h in hrefs)
        for h in hrefs:
            assert page.request.get(h).ok, h
        # no basemap configured: no tiles asked for, nothing fetched from anywhere but the store
        assert page.locator("#map img.leaflet-tile").count() == 0
        assert page.errors == []
        assert all(u.startswith(server.url) or u.startswith("data:") for u in page.requests), page.requests
    finally:
        server.close()


def test_overview_shows_every_site_with_its_state(tracked_store_dir: Path, tmp_path: Path, page) -> None:
    from scarmon.service.runner import TickReport, write_status

    store = copy_store(tracked_store_dir, tmp_path / "store")
    slide = make_site()
    publish_site(slide, store)
    write_status(slide, store, TickReport(slide.id, alert_state="confirmed", alert_level="warning", frames=N_FRAMES))
    other = build_site(store, n_frames=6, alerts=False, doc=site_doc_at("other-slide", "Other slide", 96.3, 30.8))
    # an ALARM that was confirmed and has finished: the site is back to 'none', shown as a recent alarm
    events = [
        {
            "site": "other-slide",
            "date": "2021-07-25",
            "scene_id": "S2A_20210725_R033",
            "event": "confirmed",
            "state": "confirmed",
            "level": "alarm",
            "area_m2": 5000.0,
            "baseline_m2": 2000.0,
        },
        {
            "site": "other-slide",
            "date": "2021-09-13",
            "scene_id": "S2A_20210913_R033",
            "event": "finished",
            "state": "finished",
            "level": "alarm",
            "area_m2": 5000.0,
            "baseline_m2": 2000.0,
        },
    ]
    store.put("other-slide/alerts.jsonl", "".join(json.dumps(e) + "\n" for e in events).encode())
    store.put("other-slide/alerts/state.json", json.dumps({"status": "none", "level": 0}).encode())
    publish_site(other, store)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).isoformat(timespec="seconds")
    store.put("other-slide/status.json", json.dumps({"updated_at": old, "outcome": "ok"}).encode())  # a stalled site
    server = StaticServer(tmp_path / "store")
    try:
        page.goto(server.url + "/dashboard/index.html")
        page.wait_for_function("document.querySelectorAll('#overview-map path.site-marker').length === 2")
        page.wait_for_function(
            "document.querySelector('#overview-table tr[data-site=test-slide] td.checked').textContent === 'just now'"
        )
        assert page.locator("#site-view").is_hidden()
        rows = page.locator("#overview-table tbody tr")
        assert rows.count() == 2
        slide_row = page.locator("#overview-table tr[data-site=test-slide]").inner_text()
        other_row = page.locator("#overview-table tr[data-site=other-slide]").inner_text()
        assert "warning" in slide_row and "31.10000° N, 96.00000° E" in slide_row and "just now" in slide_row
        assert "recent alarm (ended 2021-09-13)" in other_row and "30.80000° N, 96.30000° E" in other_row
        assert "2021-09-13" in other_row and "days ago" in other_row
        page.wait_for_function(
            "document.querySelector('#overview-table tr[data-site=other-slide] td.checked')"
            ".textContent === '5 days ago'"
        )
        assert "err" in page.locator("#overview-table tr[data-site=other-slide] td.checked").get_attribute("class")
        assert "err" not in page.locator("#overview-table tr[data-site=test-slide] td.checked").get_attribute("class")
        # markers where the sites are: the other site lies east and south of the test slide
        pos = page.evaluate("""() => { const m = scarmon.maps.overview, out = {};
            m.siteLayers.eachLayer(l => { if (l.getRadius) { const p = m.latLngToContainerPoint(l.getLatLng());
              out[l.options.className.split(' ').pop()] = [p.x, p.y]; } }); return out; }""")
        a, b = pos["site-marker-test-slide"], pos["site-marker-other-slide"]
        assert b[0] > a[0] + 50 and b[1] > a[1] + 50, pos
        assert "recent alarm" in page.locator("#sites li[data-site=other-slide]").inner_text()
        page.screenshot(path=str(screenshot_dir() / "dashboard-overview.png"), full_page=True)
        # a click on a marker opens the site
        page.locator("#overview-map path.site-marker-other-slide").click(force=True)
        _wait_loaded(page, 6)
        assert page.locator("#site-title").inner_text() == "Other slide"
        assert page.locator("#site-recent").inner_text() == "recent alarm (ended 2021-09-13)"
        geo = page.evaluate("() => scarmon.maps.site.current.getBounds().getCenter()")
        assert abs(geo["lng"] - 96.3) < 2e-4 and abs(geo["lat"] - 30.8) < 2e-4
        page.screenshot(path=str(screenshot_dir() / "dashboard-other-site.png"), full_page=True)
        page.locator("#overview-link").click()
        page.wait_for_function("!document.getElementById('overview').hidden")
        assert page.errors == []
    finally:
        server.close()


def test_an_unreachable_basemap_leaves_the_page_working(published_store_dir: Path, tmp_path: Path, page) -> None:
    store = copy_store(published_store_dir, tmp_path / "store")
    publish_dashboard(store, env={"SCARMON_BASEMAP_URL": "http://127.0.0.1:9/tiles/{z}/{x}/{y}.png"})
    assert json.loads(store.get("dashboard/config.json"))["basemap"]["url"].startswith("http://127.0.0.1:9/")
    server = StaticServer(tmp_path / "store")
    try:
        page.goto(server.url + "/dashboard/index.html#site=test-slide")
        _wait_loaded(page, N_FRAMES)
        assert page.locator("#map img.leaflet-tile").count() > 0  # the basemap was asked for ...
        page.wait_for_function("document.getElementById('map').classList.contains('basemap-offline')")
        assert page.locator("#map path.outline-current").count() == 1  # ... and the site still shows
        assert page.errors == []
    finally:
        server.close()


def test_dashboard_served_from_s3_over_http(s3_uri: str, page, moto_endpoint: str) -> None:
    import boto3

    from scarmon.products.publish import s3_public_read_policy

    store = open_store(s3_uri)
    site = build_site(store, n_frames=6)
    report = publish_site(site, store)
    # browsers read the bucket anonymously: the policy a deployment applies (documented in scarmon.products.publish)
    boto3.client("s3", endpoint_url=moto_endpoint).put_bucket_policy(
        Bucket=store.bucket, Policy=s3_public_read_policy(store)
    )
    url = store.url("dashboard/index.html")
    assert url.startswith(moto_endpoint) and report.dashboard_url.startswith(url)
    page.goto(report.dashboard_url)
    _wait_loaded(page, 6)
    assert "Test slide" in page.locator("#sites li").first.inner_text()
    assert page.locator("#chart circle.pt").count() == 6
    src = page.locator("#map img.frame-image").get_attribute("src")
    page.locator("#slider").fill("1")
    page.wait_for_function("document.getElementById('frame-date').textContent.includes('(2 of 6)')")
    assert page.locator("#map img.frame-image").get_attribute("src") != src
    _wait_loaded(page, 6)
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
        page.wait_for_function(
            "!document.getElementById('site-status').hidden && "
            "!document.getElementById('site-status').textContent.includes('Loading')"
        )
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
