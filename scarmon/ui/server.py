"""`scarmon ui`: refinement in the browser. A small local web app, on loopback only, behind a random token.

A person picks a frame, clicks positive (scar) and negative (not scar) points on it and submits; the points go
through the one refine operation of `scarmon refine` and the refine flow (`scarmon.service.runner.refine`): under
the site lock, the clicks are stored (in lon/lat, tracking marked dirty from that frame), the scar is re-tracked
from that frame, the alert history is rebuilt from the corrected series (nothing re-sent), and (if the site has
published products) the products are updated so the dashboard shows the refined boundary.

Security: binds 127.0.0.1 only; every request needs the token (in the URL the command prints, or the
X-Scarmon-Token header) and a Host header naming the loopback address (against DNS rebinding); POST bodies must be
JSON. No static files are served from disk and nothing is fetched from the internet.
"""

from __future__ import annotations

import datetime as dt
import hmac
import http.server
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from scarmon.errors import ScarmonError
from scarmon.site import Site, load_site
from scarmon.store import keys
from scarmon.store.backends import KeyMissing, Store
from scarmon.store.sequence import FrameEntry, Manifest

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
MAX_BODY = 64 * 1024
MAX_POINTS = 200


class UIError(ScarmonError):
    """A request the UI cannot serve; the message goes back to the page."""


@dataclass
class Refiner:
    """What the UI does for a site: read frames, and apply corrections like `scarmon refine`."""

    site_file: Path
    store: Store
    retrack: bool = True
    tracker_factory: Callable[[Site], Any] | None = None

    @property
    def site(self) -> Site:
        return load_site(self.site_file)  # re-read: the site file may have changed while the UI runs

    def frames(self) -> dict[str, Any]:
        from scarmon.store.sequence import load_manifest
        from scarmon.tracking.corrections import list_corrections
        from scarmon.tracking.pipeline import read_series

        site = self.site
        manifest, _ = load_manifest(self.store, site.id)
        rows = {r["scene_id"]: r for r in read_series(self.store, site.id)}
        grid = manifest.grid or {}
        corrections = list_corrections(self.store, site.id)
        if manifest.grid:
            g = manifest.site_grid
            for c in corrections:  # where to draw them: fractional pixel coordinates, like the clicks
                col, row = g.lonlat_to_pixel(c["lon"], c["lat"])
                c["col"], c["row"] = round(float(col), 2), round(float(row), 2)
        return {
            "site": site.id,
            "name": site.display_name,
            "width": grid.get("width"),
            "height": grid.get("height"),
            "frames": [
                {
                    "i": i,
                    "date": f.date,
                    "scene_id": f.scene_id,
                    "area_m2": rows.get(f.scene_id, {}).get("area_m2"),
                    "low_confidence": bool(rows.get(f.scene_id, {}).get("low_confidence")),
                    "tracked": f.scene_id in rows,
                }
                for i, f in enumerate(manifest.frames)
            ],
            "corrections": corrections,
            "dirty_from": manifest.dirty_from,
        }

    def _frame(self, i: int) -> tuple[Manifest, FrameEntry]:
        from scarmon.store.sequence import load_manifest

        manifest, _ = load_manifest(self.store, self.site.id)
        if not 0 <= i < len(manifest.frames):
            raise UIError(f"no frame #{i}: the site has {len(manifest.frames)} frames")
        return manifest, manifest.frames[i]

    def image(self, i: int) -> bytes:
        """The frame as the people refining it should see it: the quicklook if published, else the video frame."""

        manifest, frame = self._frame(i)
        for key in (keys.quicklook(manifest.site_id, frame), frame.objects.get("video")):
            if key:
                try:
                    return self.store.get(key)
                except KeyMissing:
                    continue
        raise UIError(f"frame {frame.date} has no image in the store")

    def boundary(self, i: int) -> list[list[list[float]]]:
        from scarmon.products.publish import boundary_rings, mask_to_pixel_polygon
        from scarmon.tracking.pipeline import read_mask

        manifest, frame = self._frame(i)
        try:
            mask = read_mask(self.store, keys.mask(manifest.site_id, frame))
        except KeyMissing:
            return []
        return boundary_rings(mask_to_pixel_polygon(mask))

    def submit(self, date: str, points: list[dict[str, Any]], retrack: bool | None = None) -> dict[str, Any]:
        """Pixel points (col, row as fractional pixel coordinates of the site grid; label 1/0) on the frame of
        `date` -> stored corrections (lon/lat), then re-track and re-publish, as `scarmon refine` does."""
        from scarmon.store.sequence import load_manifest

        site = self.site
        try:
            day = dt.date.fromisoformat(str(date))
        except ValueError:
            raise UIError(f"date {date!r} is not YYYY-MM-DD") from None
        if not isinstance(points, list) or not points or len(points) > MAX_POINTS:
            raise UIError(f"give 1 to {MAX_POINTS} points")
        manifest, _ = load_manifest(self.store, site.id)
        if manifest.grid is None:
            raise UIError(f"site {site.id} has no frames yet")
        grid = manifest.site_grid
        lonlat = []
        for p in points:
            try:
                col, row, label = float(p["col"]), float(p["row"]), int(p["label"])
            except (KeyError, TypeError, ValueError):
                raise UIError(f"a point must be {{col, row, label}}, got {p!r}") from None
            if not (0 <= col <= grid.width and 0 <= row <= grid.height):
                raise UIError(f"point ({col}, {row}) lies outside the frame ({grid.width} x {grid.height})")
            lon, lat = grid.pixel_to_lonlat(col - 0.5, row - 0.5)  # pixel_to_lonlat takes pixel indices (centres)
            lonlat.append((round(float(lon), 7), round(float(lat), 7), label))
        from scarmon.service.runner import TickOptions, refine
        from scarmon.store.lock import SiteBusy

        tracker = self.tracker_factory(site) if self.tracker_factory else None
        retrack = self.retrack if retrack is None else retrack
        try:
            report = refine(
                site, self.store, date=day, points=lonlat, retrack=retrack, opts=TickOptions(tracker=tracker)
            )
        except SiteBusy as exc:
            raise UIError(str(exc)) from None
        ids = report.corrections
        out: dict[str, Any] = {
            "ids": ids,
            "date": day.isoformat(),
            "points": [list(p) for p in lonlat],
            "message": f"stored {len(ids)} correction(s) on {day.isoformat()}",
        }
        if report.tick is not None:
            out["tracked"] = next((ln for ln in report.tick.lines if ln.startswith("site")), "")
            out["message"] += "; re-tracked; alert history rebuilt"
            if "publish" in report.tick.stages:
                out["published"] = report.tick.lines[-1]
                out["message"] += "; products updated"
        return out


class _Handler(http.server.BaseHTTPRequestHandler):
    server: UIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("ui: " + fmt, *args)  # never log the token-bearing URL at info level

    # -- plumbing
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; "
            "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'",
        )
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _authorized(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if host not in (f"{LOOPBACK}:{self.server.port}", f"localhost:{self.server.port}"):
            return False
        q = parse_qs(urlparse(self.path).query)
        token = self.headers.get("X-Scarmon-Token") or (q.get("token") or [""])[0]
        return hmac.compare_digest(token.encode(), self.server.token.encode())

    def _guard(self) -> bool:
        if not self._authorized():
            self._send(403, b"forbidden: open the URL printed by `scarmon ui` (it carries the token)\n", "text/plain")
            return False
        return True

    # -- routes
    def do_GET(self) -> None:  # noqa: N802
        if not self._guard():
            return
        path = urlparse(self.path).path
        try:
            if path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/api/frames":
                self._json(200, self.server.refiner.frames())
            elif path.startswith("/api/image/"):
                self._send(200, self.server.refiner.image(int(path.rsplit("/", 1)[1])), "image/png")
            elif path.startswith("/api/boundary/"):
                self._json(200, {"rings": self.server.refiner.boundary(int(path.rsplit("/", 1)[1]))})
            else:
                self._json(404, {"error": f"no such page {path}"})
        except (UIError, ValueError) as e:
            self._json(400, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - shown to the person, logged in full
            log.exception("ui: GET %s failed", path)
            self._json(500, {"error": f"{type(e).__name__}: {e}"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._guard():
            return
        path = urlparse(self.path).path
        if path != "/api/corrections":
            self._json(404, {"error": f"no such endpoint {path}"})
            return
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self._json(415, {"error": "send JSON"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(413, {"error": "empty or too large request"})
            return
        try:
            doc = json.loads(self.rfile.read(length))
            with self.server.lock:  # one refinement at a time
                result = self.server.refiner.submit(doc.get("date"), doc.get("points"), doc.get("retrack"))
            self._json(200, result)
        except (UIError, ValueError) as e:  # CorrectionError is a ValueError
            self._json(400, {"error": str(e)})
        except Exception as e:  # noqa: BLE001
            log.exception("ui: POST failed")
            self._json(500, {"error": f"{type(e).__name__}: {e}"})


class UIServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, refiner: Refiner, *, port: int = 0, token: str | None = None) -> None:
        super().__init__((LOOPBACK, port), _Handler)
        self.refiner = refiner
        self.token = token or secrets.token_urlsafe(24)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/?token={self.token}"

    def start(self) -> UIServer:
        """Serve in a background thread (tests, notebooks); `serve_forever()` for the command."""
        self._thread = threading.Thread(target=self.serve_forever, name="scarmon-ui", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def make_server(
    site_file: str | Path, store: Store, *, port: int = 0, retrack: bool = True, token: str | None = None
) -> UIServer:
    site_file = Path(site_file)
    load_site(site_file)  # fail now on a bad site file, not on the first request
    return UIServer(Refiner(site_file, store, retrack=retrack), port=port, token=token)


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scarmon refine</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2733; background: #f6f7f9; }
header { padding: .6rem 1rem; background: #fff; border-bottom: 1px solid #d9dee4; }
h1 { font-size: 1.1rem; margin: 0; }
main { display: flex; gap: 1rem; padding: 1rem; flex-wrap: wrap; }
#view { position: relative; width: min(80vh, 640px); aspect-ratio: 1/1; background: #ccc; cursor: crosshair; }
#view img, #view svg { position: absolute; inset: 0; width: 100%; height: 100%; }
#view img { image-rendering: pixelated; }
.mask { fill: rgba(255,230,0,.15); stroke: #ffe600; stroke-width: 2; vector-effect: non-scaling-stroke; fill-rule: evenodd; }
.pos { fill: #1fbf4a; stroke: #fff; stroke-width: 2; vector-effect: non-scaling-stroke; }
.neg { fill: #e0283c; stroke: #fff; stroke-width: 2; vector-effect: non-scaling-stroke; }
.old { opacity: .55; }
aside { min-width: 280px; max-width: 420px; }
fieldset { border: 1px solid #d9dee4; border-radius: 6px; margin: 0 0 .8rem; }
button { padding: .35rem .8rem; }
#status { padding: .5rem .7rem; border-radius: 6px; background: #eef5ee; border: 1px solid #9ccf9c; }
#status.error { background: #fdecee; border-color: #e89aa6; }
#status:empty { display: none; }
ol { padding-left: 1.2rem; }
</style></head>
<body>
<header><h1>scarmon refine: <span id="site"></span></h1></header>
<main>
  <div id="view"><img id="frame" alt="frame"><svg id="overlay" preserveAspectRatio="none">
    <path id="mask" class="mask"></path><g id="old-points"></g><g id="points"></g></svg></div>
  <aside>
    <fieldset><legend>Frame</legend>
      <select id="frame-select"></select>
      <div id="frame-info"></div>
    </fieldset>
    <fieldset><legend>Click adds a point</legend>
      <label><input type="radio" name="mode" value="1" id="mode-pos" checked> positive (scar)</label>
      <label><input type="radio" name="mode" value="0" id="mode-neg"> negative (not scar)</label>
      <div class="hint">Shift-click adds a negative point.</div>
    </fieldset>
    <fieldset><legend>Points to submit</legend>
      <ol id="point-list"></ol>
      <button id="undo">Remove last</button> <button id="clear">Clear</button>
      <label><input type="checkbox" id="retrack" checked> re-track now</label>
    </fieldset>
    <button id="submit" disabled>Submit corrections</button>
    <p id="status" role="status"></p>
    <p>Stored corrections: <span id="n-corrections">0</span></p>
  </aside>
</main>
<script>
(function () {
  "use strict";
  var token = new URLSearchParams(location.search).get("token") || "";
  var q = "?token=" + encodeURIComponent(token);
  var data = null, cur = 0, points = [];
  var $ = function (id) { return document.getElementById(id); };
  var NS = "http://www.w3.org/2000/svg";
  function api(path, opts) {
    opts = opts || {};
    opts.headers = Object.assign({ "X-Scarmon-Token": token }, opts.headers || {});
    return fetch(path + q, opts).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); } return j; });
    });
  }
  function status(text, err) { $("status").textContent = text; $("status").className = err ? "error" : ""; }
  function ringsPath(rings) {
    return rings.map(function (r) { return "M" + r.map(function (p) { return p[0] + "," + p[1]; }).join("L") + "Z"; }).join("");
  }
  function dot(g, col, row, label, cls) {
    var c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", col); c.setAttribute("cy", row); c.setAttribute("r", Math.max(2, data.width / 120));
    c.setAttribute("class", (label ? "pos" : "neg") + (cls ? " " + cls : ""));
    g.appendChild(c);
  }
  function drawPoints() {
    var g = $("points"); g.innerHTML = "";
    var list = $("point-list"); list.innerHTML = "";
    points.forEach(function (p) {
      dot(g, p.col, p.row, p.label);
      var li = document.createElement("li");
      li.textContent = (p.label ? "positive" : "negative") + " at col " + p.col.toFixed(1) + ", row " + p.row.toFixed(1);
      list.appendChild(li);
    });
    $("submit").disabled = points.length === 0;
  }
  function drawOld() {
    var g = $("old-points"); g.innerHTML = "";
    var f = data.frames[cur];
    data.corrections.forEach(function (c) {
      if (f && c.date === f.date && c.col !== undefined) { dot(g, c.col, c.row, c.label, "old"); }
    });
    $("n-corrections").textContent = data.corrections.length;
  }
  function showFrame(i) {
    cur = i;
    var f = data.frames[i];
    $("frame-select").value = String(i);
    $("frame").src = "/api/image/" + i + q;
    $("frame-info").textContent = f.date + (f.area_m2 != null ? " · " + Math.round(f.area_m2).toLocaleString("en-US") + " m²" : "") +
      (f.low_confidence ? " · low confidence" : "") + (f.tracked ? "" : " · not tracked yet");
    $("mask").setAttribute("d", "");
    api("/api/boundary/" + i).then(function (j) { if (cur === i) { $("mask").setAttribute("d", ringsPath(j.rings)); } });
    points = []; drawPoints(); drawOld();
  }
  function load(keep) {
    return api("/api/frames").then(function (j) {
      data = j;
      $("site").textContent = j.name;
      $("overlay").setAttribute("viewBox", "0 0 " + j.width + " " + j.height);
      var sel = $("frame-select"); sel.innerHTML = "";
      j.frames.forEach(function (f) {
        var o = document.createElement("option"); o.value = String(f.i);
        o.textContent = f.date + (f.low_confidence ? " (low confidence)" : ""); sel.appendChild(o);
      });
      drawOld();
      if (!j.frames.length) { status("This site has no frames yet.", true); return; }
      showFrame(keep !== undefined ? keep : j.frames.length - 1);
    });
  }
  $("overlay").addEventListener("click", function (e) {
    if (!data || !data.frames.length) { return; }
    var r = this.getBoundingClientRect();
    var col = (e.clientX - r.left) / r.width * data.width, row = (e.clientY - r.top) / r.height * data.height;
    var label = e.shiftKey ? 0 : Number(document.querySelector("input[name=mode]:checked").value);
    points.push({ col: col, row: row, label: label });
    drawPoints();
  });
  $("frame-select").addEventListener("change", function () { showFrame(Number(this.value)); });
  $("undo").addEventListener("click", function () { points.pop(); drawPoints(); });
  $("clear").addEventListener("click", function () { points = []; drawPoints(); });
  $("submit").addEventListener("click", function () {
    var f = data.frames[cur];
    $("submit").disabled = true;
    status("Submitting " + points.length + " point(s)…");
    api("/api/corrections", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ date: f.date, points: points, retrack: $("retrack").checked }) })
      .then(function (j) { status(j.message); points = []; return load(cur); })
      .catch(function (e) { status("Could not store the corrections: " + e.message, true); $("submit").disabled = false; });
  });
  load().catch(function (e) { status("Could not load the site: " + e.message, true); });
})();
</script>
</body></html>
"""

__all__ = ["Refiner", "UIError", "UIServer", "make_server"]
