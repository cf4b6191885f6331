/* scarmon dashboard: a static page that reads the products a store publishes, over relative HTTP URLs.
 *
 * The page lives at STORE/dashboard/index.html; it reads STORE/sites.json, STORE/dashboard/config.json (optional
 * basemap), then per site STORE/{site}/products/index.json, STORE/{site}/status.json and the files that index
 * names (paths relative to STORE/{site}/). Maps are drawn with Leaflet, shipped in dashboard/vendor/ (no CDN).
 * Without a basemap (none configured, or offline) the maps show the site's own imagery and outlines on a plain
 * background with a lat/lon graticule. Works from any static HTTP server on a store folder and from an S3 bucket.
 */
(function () {
  "use strict";

  var ROOT = "../";
  var DAY = 864e5;
  var STALE_MS = 48 * 3600e3;  // as `scarmon status --stale-hours 48`: a site not checked for longer is shown in red
  var state = { sites: [], config: { basemap: null }, statuses: {}, site: null, index: null, i: 0,
    outlines: {}, view: null };
  var maps = { overview: null, site: null };
  var $ = function (id) { return document.getElementById(id); };
  var SVGNS = "http://www.w3.org/2000/svg";
  var LEVEL_COLORS = { none: "#3c8d2f", watch: "#e6a700", warning: "#e4572e", alarm: "#b0003a", unknown: "#6b7785" };
  window.scarmon = { state: state, maps: maps };  // for people debugging the page (and the browser tests)

  function fetchJSON(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status + " for " + url); }
      return r.text().then(function (t) {
        try { return JSON.parse(t); } catch (e) { throw new Error("not valid JSON: " + url); }
      });
    });
  }

  function el(tag, attrs, text) {
    var e = tag.indexOf("svg:") === 0 ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }

  function isNum(v) { return v !== null && v !== undefined && v !== "" && !isNaN(Number(v)); }
  function fmtNum(v, digits) {
    if (!isNum(v)) { return "–"; }
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function fmtPct(v) {
    if (!isNum(v)) { return "–"; }
    var n = Number(v);
    return (n > 0 ? "+" : "") + n.toFixed(1) + " %";
  }
  function fmtArea(m2) {
    if (!isNum(m2)) { return "–"; }
    m2 = Number(m2);
    return m2 >= 1e6 ? fmtNum(m2 / 1e6, 2) + " km²" : m2 >= 1e4 ? fmtNum(m2 / 1e4, 1) + " ha" : fmtNum(m2) + " m²";
  }
  function fmtLatLon(lat, lon) {
    return Math.abs(lat).toFixed(5) + "° " + (lat >= 0 ? "N" : "S") + ", " + Math.abs(lon).toFixed(5) + "° " +
      (lon >= 0 ? "E" : "W");
  }
  function daysAgo(iso) {
    var t = Date.parse(String(iso).length === 10 ? iso + "T00:00:00Z" : iso);
    return isNaN(t) ? null : Math.floor((Date.now() - t) / DAY);
  }
  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) { return ""; }
    var s = (Date.now() - t) / 1000;
    if (s < 90) { return "just now"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    if (s < 36 * 3600) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " days ago";
  }
  function fmtReason(text, clear) {  // "clear fraction 0.85 < 0.90" -> "85 % of the site clear (at least 90 % needed)"
    return String(text || "").replace(/clear fraction (\d*\.\d+) < (\d*\.\d+)/g, function (_, a, b) {
      var pa = (isNum(clear) ? Number(clear) : Number(a)) * 100, pb = Number(b) * 100;  // the exact fraction if known
      var sa = pa.toFixed(0) === pb.toFixed(0) ? pa.toFixed(1) : pa.toFixed(0);
      return sa + " % of the site clear (at least " + pb.toFixed(0) + " % needed)";
    });
  }
  function levelClass(level) {
    level = String(level || "none").toLowerCase();
    return ["none", "watch", "warning", "alarm"].indexOf(level) >= 0 ? level : "unknown";
  }
  function siteUrl(rel) {
    return ROOT + encodeURIComponent(state.site.id) + "/" + rel.split("/").map(encodeURIComponent).join("/");
  }

  function parseHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("=");
      if (p[0]) { out[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || ""); }
    });
    return out;
  }
  function setHash() {
    var h = "site=" + encodeURIComponent(state.site.id);
    var f = state.index && state.index.frames[state.i];
    if (f) { h += "&date=" + f.date; }
    history.replaceState(null, "", "#" + h);
  }

  // ---- alert state: current level, or a 'recent' alert that has ended ----------------------------------------
  function recentText(r) {
    if (!r) { return ""; }
    var over = ["finished", "reset", "none", "cleared", "closed", "resolved"].indexOf(String(r.state)) >= 0;
    return "recent " + r.level + (over ? " (ended " + (r.last_date || r.date) + ")" : " (" + r.date + ")");
  }
  function badge(level, recent) {
    var lc = levelClass(level);
    if (lc === "none" && recent) {
      var b = el("span", { "class": "level recent " + levelClass(recent.level), title: "the alert of " +
        (recent.first_date || recent.date) + " has ended; the site is back to no alert" }, recentText(recent));
      return b;
    }
    return el("span", { "class": "level " + lc }, level || "none");
  }
  function markerColor(s) {
    var lc = levelClass(s.alert_level);
    if (s.status === "error") { return LEVEL_COLORS.unknown; }
    return LEVEL_COLORS[lc] || LEVEL_COLORS.unknown;
  }

  // ---- maps --------------------------------------------------------------------------------------------------
  function baseLayer(map) {
    var bm = state.config && state.config.basemap;
    if (!bm || !bm.url) { return null; }
    var layer = L.tileLayer(bm.url, { attribution: bm.attribution || "", maxNativeZoom: bm.max_zoom || 19,
      maxZoom: 22, crossOrigin: false });
    layer.on("tileerror", function () { map.getContainer().classList.add("basemap-offline"); });
    layer.addTo(map);
    return layer;
  }

  function niceStep(span, n) {
    var raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }

  function Graticule(map) {  // lat/lon lines, so positions read without a basemap
    var group = L.layerGroup().addTo(map);
    function draw() {
      group.clearLayers();
      var b = map.getBounds(), w = Math.max(b.getWest(), -180), e = Math.min(b.getEast(), 180);
      var s = Math.max(b.getSouth(), -85), n = Math.min(b.getNorth(), 85);
      var step = niceStep(Math.max(e - w, n - s), 5);
      var dec = Math.max(0, -Math.floor(Math.log10(step)));
      var x, y;
      for (x = Math.ceil(w / step) * step; x <= e; x += step) {
        group.addLayer(L.polyline([[s, x], [n, x]], { color: "#8fa3b8", weight: 0.8, opacity: 0.7, interactive: false }));
        group.addLayer(L.marker([n, x], { interactive: false, icon: L.divIcon({ className: "grat-label",
          html: Math.abs(x).toFixed(dec) + "°" + (x >= 0 ? "E" : "W"), iconSize: null, iconAnchor: [-3, -3] }) }));
      }
      for (y = Math.ceil(s / step) * step; y <= n; y += step) {
        group.addLayer(L.polyline([[y, w], [y, e]], { color: "#8fa3b8", weight: 0.8, opacity: 0.7, interactive: false }));
        group.addLayer(L.marker([y, w], { interactive: false, icon: L.divIcon({ className: "grat-label",
          html: Math.abs(y).toFixed(dec) + "°" + (y >= 0 ? "N" : "S"), iconSize: null, iconAnchor: [-46, 14] }) }));
      }
    }
    map.on("moveend zoomend resize", draw);
    return { redraw: draw, group: group };
  }

  function CursorControl() {  // lat/lon under the cursor
    var ctl = L.control({ position: "bottomleft" });
    ctl.onAdd = function (map) {
      var div = L.DomUtil.create("div", "cursor-coords");
      div.id = map.getContainer().id + "-cursor";
      div.textContent = "move the cursor over the map for coordinates";
      map.on("mousemove", function (e) { div.textContent = fmtLatLon(e.latlng.lat, e.latlng.lng); });
      return div;
    };
    return ctl;
  }

  function newMap(id, opts) {
    var map = L.map(id, Object.assign({ zoomSnap: 0.25, maxZoom: 22, worldCopyJump: true }, opts || {}));
    map.attributionControl.setPrefix('<a href="https://leafletjs.com" title="Leaflet">Leaflet</a>');
    baseLayer(map);
    L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
    new CursorControl().addTo(map);
    map.graticule = Graticule(map);
    return map;
  }

  // ---- overview of all sites ---------------------------------------------------------------------------------
  function siteBounds(s) {
    if (s.bbox && s.bbox.length === 4) { return L.latLngBounds([s.bbox[1], s.bbox[0]], [s.bbox[3], s.bbox[2]]); }
    if (s.center) { return L.latLngBounds([s.center[1], s.center[0]], [s.center[1], s.center[0]]); }
    return null;
  }

  function showOverview() {
    state.view = "overview";
    state.site = null;
    $("site-view").hidden = true;
    $("overview").hidden = false;
    markNav(null);
    document.title = "scarmon: all sites";
    var placed = state.sites.filter(function (s) { return s.center; });
    $("overview-meta").textContent = state.sites.length + " site(s)" +
      (placed.length < state.sites.length ? ", " + (state.sites.length - placed.length) +
        " without a location yet (publish them again)" : "");
    if (!maps.overview) { maps.overview = newMap("overview-map"); maps.overview.siteLayers = L.featureGroup().addTo(maps.overview); }
    var map = maps.overview;
    map.invalidateSize();
    map.siteLayers.clearLayers();
    var all = null;
    placed.forEach(function (s) {
      var color = markerColor(s), b = siteBounds(s);
      var rect = L.rectangle(b, { color: color, weight: 2, fillOpacity: 0.15, className: "site-aoi" });
      var recent = levelClass(s.alert_level) === "none" && s.recent_alert;
      var marker = L.circleMarker([s.center[1], s.center[0]], { radius: 9, color: recent ? LEVEL_COLORS[levelClass(recent.level)] : "#fff",
        weight: recent ? 4 : 2, fillColor: color, fillOpacity: 0.95, className: "site-marker site-marker-" + s.id });
      var tip = (s.name || s.id) + ": " + (s.alert_level || "none") + (recent ? ", " + recentText(recent) : "");
      marker.bindTooltip(tip, { permanent: true, direction: "right", offset: [10, 0], className: "site-tip" });
      [rect, marker].forEach(function (lyr) {
        lyr.on("click", function () { location.hash = "site=" + encodeURIComponent(s.id); });
        map.siteLayers.addLayer(lyr);
      });
      all = all ? all.extend(b) : L.latLngBounds(b.getSouthWest(), b.getNorthEast());
    });
    if (all) {
      map.fitBounds(all.pad(placed.length > 1 ? 0.25 : 2), { maxZoom: 15 });
    } else {
      map.setView([20, 0], 2);
    }
    map.graticule.redraw();
    renderOverviewTable();
  }

  function renderOverviewTable() {
    var tb = $("overview-table").tBodies[0];
    tb.innerHTML = "";
    state.sites.forEach(function (s) {
      var tr = el("tr", { "data-site": s.id, "class": s.status === "error" ? "error" : "" });
      var name = el("td");
      name.appendChild(el("a", { href: "#site=" + encodeURIComponent(s.id) }, s.name || s.id));
      tr.appendChild(name);
      var lv = el("td");
      lv.appendChild(badge(s.alert_level, s.recent_alert));
      if (s.status === "error") { lv.appendChild(el("span", { "class": "err" }, " publish failed")); }
      tr.appendChild(lv);
      tr.appendChild(el("td", {}, s.center ? fmtLatLon(s.center[1], s.center[0]) : "–"));
      var st = state.statuses[s.id];
      var late = st && st.updated_at && (Date.now() - Date.parse(st.updated_at)) > STALE_MS;
      tr.appendChild(el("td", { "class": "checked" + (late || (st && st.outcome && st.outcome !== "ok") ? " err" : ""),
        title: late ? "no tick for more than 48 hours: is the monitor running?" : "" },
        st && st.updated_at ? ago(st.updated_at) + (st.outcome && st.outcome !== "ok" ? " (" + st.outcome + ")" : "") : "–"));
      var d = s.last_date ? daysAgo(s.last_date) : null;
      tr.appendChild(el("td", {}, s.last_date ? s.last_date + " (" + d + " days ago)" : "none yet"));
      tr.appendChild(el("td", {}, String(s.frames || 0)));
      tr.appendChild(el("td", {}, fmtArea(s.last_area_m2)));
      tb.appendChild(tr);
    });
  }

  function loadStatuses() {  // {site}/status.json: when each site was last checked (absent until a tick ran)
    state.sites.forEach(function (s) {
      fetchJSON(ROOT + (s.status_doc || encodeURIComponent(s.id) + "/status.json")).then(function (doc) {
        state.statuses[s.id] = doc;
        if (state.view === "overview") { renderOverviewTable(); }
        if (state.site && state.site.id === s.id) { renderHealth(); }
        renderSites();
      }).catch(function () { state.statuses[s.id] = null; });
    });
  }

  // ---- site list ---------------------------------------------------------------------------------------------
  function renderSites() {
    var ul = $("sites");
    ul.innerHTML = "";
    if (!state.sites.length) {
      ul.appendChild(el("li", { "class": "empty" }, "No sites published yet."));
      return;
    }
    state.sites.forEach(function (s) {
      var li = el("li", { "data-site": s.id, "class": (s.status === "error" ? "error" : "") +
        (state.site && state.site.id === s.id ? " selected" : "") });
      li.appendChild(el("span", { "class": "name" }, s.name || s.id));
      li.appendChild(badge(s.alert_level, s.recent_alert));
      var meta = s.status === "error" ? " publish failed" :
        (s.frames ? " " + s.frames + " frames, last " + s.last_date : " no frames yet");
      li.appendChild(el("span", { "class": "muted" }, meta));
      li.addEventListener("click", function () { location.hash = "site=" + encodeURIComponent(s.id); });
      ul.appendChild(li);
    });
  }
  function markNav(id) {
    Array.prototype.forEach.call($("sites").children, function (li) {
      li.classList.toggle("selected", li.getAttribute("data-site") === id);
    });
  }

  function showSiteStatus(text, isError) {
    var box = $("site-status");
    box.textContent = text;
    box.className = "notice" + (isError ? " error" : "");
    box.hidden = !text;
  }

  function renderHealth() {
    var s = state.site, box = $("site-health");
    if (!s) { return; }
    box.innerHTML = "";
    var st = state.statuses[s.id];
    var parts = [];
    parts.push(st && st.updated_at ? "last checked " + st.updated_at.replace("T", " ").replace("+00:00", " UTC") +
      " (" + ago(st.updated_at) + ")" : "last checked: unknown (no status.json yet)");
    var last = (state.index && state.index.last_frame_date) || s.last_date;
    if (last) {
      var d = daysAgo(last);
      parts.push("last clear image " + last + " (" + d + " day" + (d === 1 ? "" : "s") + " ago)");
    } else {
      parts.push("no clear image yet");
    }
    if (st && st.last_error) { parts.push("last error: " + st.last_error); }
    var late = st && st.updated_at && (Date.now() - Date.parse(st.updated_at)) > STALE_MS;
    parts.forEach(function (p, k) {
      box.appendChild(el("span", { "class": k === 2 || (k === 0 && late) ? "err" : "",
        id: ["health-checked", "health-clear", "health-error"][k] }, p));
    });
  }

  function selectSite(id, date) {
    var s = state.sites.filter(function (x) { return x.id === id; })[0];
    if (!s) {
      $("global-status").textContent = "No site " + id + " in this store; showing all sites.";
      showOverview();
      return;
    }
    state.view = "site";
    state.site = s; state.index = null; state.outlines = {};
    markNav(s.id);
    $("overview").hidden = true;
    $("site-view").hidden = false;
    document.title = "scarmon: " + (s.name || s.id);
    $("site-title").textContent = s.name || s.id;
    setLevel(s.alert_level, s.recent_alert);
    $("site-meta").textContent = s.center ? fmtLatLon(s.center[1], s.center[0]) : "";
    $("site-body").hidden = true;
    renderHealth();
    showSiteStatus("Loading…", false);
    var url = ROOT + (s.index || (encodeURIComponent(s.id) + "/products/index.json"));
    fetchJSON(url).then(function (index) {
      if (state.site !== s) { return; }
      if (!index || !Array.isArray(index.frames)) { throw new Error("products index has no frame list: " + url); }
      state.index = index;
      renderHealth();
      var msg = s.status === "error" ? "The last publish of this site failed (" + (s.error || "unknown error") +
        "); showing the products published before it." : "";
      if (!index.frames.length) {
        showSiteStatus("No frames yet for this site: nothing has been tracked and published." +
          (index.untracked_frames ? " (" + index.untracked_frames + " frame(s) waiting for tracking)" : ""), false);
        $("site-body").hidden = true;
        return;
      }
      showSiteStatus(msg, true);
      if (!msg) { $("site-status").hidden = true; }
      renderSite(date);
      loadOutlines(index);
    }).catch(function (err) {
      if (state.site !== s) { return; }
      var why = s.status === "error" ? "The last publish failed: " + (s.error || "unknown error") + ". " : "";
      showSiteStatus(why + "The products of this site could not be loaded (" + err.message + ").", true);
      $("site-body").hidden = true;
    });
  }

  function setLevel(level, recent) {
    $("site-level").textContent = "alert level: " + (level || "none");
    $("site-level").className = "level " + levelClass(level);
    var r = $("site-recent");
    r.hidden = !(recent && levelClass(level) === "none");
    if (!r.hidden) { r.textContent = recentText(recent); r.className = "level recent " + levelClass(recent.level); }
  }

  // ---- one site ----------------------------------------------------------------------------------------------
  function renderSite(date) {
    var idx = state.index, frames = idx.frames;
    $("site-body").hidden = false;
    setLevel(idx.alert_level, idx.recent_alert);
    $("site-meta").textContent = (idx.center ? fmtLatLon(idx.center[1], idx.center[0]) + " · " : "") +
      frames.length + " frames, " + frames[0].date + " to " + frames[frames.length - 1].date +
      (idx.published_at ? " · published " + idx.published_at : "");
    $("first-date").textContent = frames[0].date;
    var slider = $("slider");
    slider.max = String(frames.length - 1);
    var i = frames.length - 1;
    if (date) { frames.forEach(function (f, k) { if (f.date === date) { i = k; } }); }
    setupSiteMap(idx);
    renderAlerts(idx.alerts || []);
    renderDownloads(idx);
    renderFrameTable(frames);
    selectFrame(i);
  }

  function setupSiteMap(idx) {
    if (!maps.site) {
      maps.site = newMap("map");
      maps.site.on("zoomend", function () { maps.site.getContainer().setAttribute("data-zoom", maps.site.getZoom()); });
    }
    var map = maps.site;
    map.invalidateSize();
    ["image", "aoi", "current", "first"].forEach(function (k) { if (map[k]) { map.removeLayer(map[k]); map[k] = null; } });
    var b = idx.map && idx.map.bounds;
    map.frameBounds = b ? L.latLngBounds([b[1], b[0]], [b[3], b[2]]) : null;
    if (map.frameBounds) {
      map.image = L.imageOverlay(siteUrl(idx.frames[idx.frames.length - 1].map_image), map.frameBounds,
        { interactive: false, className: "frame-image", alt: "NDVI of the selected date" });
      map.image.on("error", function () { showSiteStatus("The image of this date could not be loaded.", true); });
      if ($("show-image").checked) { map.image.addTo(map); }
    }
    if (idx.aoi) {
      map.aoi = L.geoJSON(idx.aoi, { interactive: false, style: { color: "#fff", weight: 1.5, dashArray: "2 4", fill: false } }).addTo(map);
    }
    var fit = map.frameBounds || (map.aoi && map.aoi.getBounds());
    if (fit) { map.fitBounds(fit, { padding: [8, 8] }); }
  }

  function loadOutlines(idx) {  // scar outlines per date, in lon/lat, from the published GeoJSON
    var rel = idx.files && idx.files.polygons_geojson;
    if (!rel) { return; }
    var s = state.site;
    fetchJSON(siteUrl(rel)).then(function (gj) {
      if (state.site !== s) { return; }
      (gj.features || []).forEach(function (f) { state.outlines[f.properties.scene_id] = f; });
      var first = state.outlines[idx.frames[0].scene_id];
      var map = maps.site;
      if (first && first.geometry) {
        map.first = L.geoJSON(first, { interactive: false, className: "outline-first",
          style: { color: "#00d5ff", weight: 2, dashArray: "6 5", fill: false } });
        if ($("show-first").checked) { map.first.addTo(map); }
      }
      drawCurrent();
    }).catch(function (err) {
      if (state.site !== s) { return; }
      showSiteStatus("The scar outlines could not be loaded (" + err.message + ").", true);
    });
  }

  function drawCurrent() {
    var map = maps.site, f = state.index && state.index.frames[state.i];
    if (!map || !f) { return; }
    if (map.current) { map.removeLayer(map.current); map.current = null; }
    var feat = state.outlines[f.scene_id];
    $("map").setAttribute("data-outline-date", feat ? f.date : "");
    var c = state.index.center;
    $("frame-where").textContent = c ? "site centre " + fmtLatLon(c[1], c[0]) : "–";
    if (!feat || !feat.geometry) { return; }
    map.current = L.geoJSON(feat, { className: "outline-current",
      style: { color: "#ffe600", weight: 3, opacity: 1, fillColor: "#ffe600", fillOpacity: 0.12 } });
    var mid = map.current.getBounds().getCenter();
    $("frame-where").textContent = "scar centre " + fmtLatLon(mid.lat, mid.lng);
    map.current.bindTooltip(f.date + ": " + fmtArea(f.area_m2), { sticky: true });
    if ($("show-current").checked) { map.current.addTo(map); }
  }

  function selectFrame(i) {
    var frames = state.index.frames;
    i = Math.max(0, Math.min(frames.length - 1, i));
    state.i = i;
    var f = frames[i];
    $("slider").value = String(i);
    if (maps.site && maps.site.image && f.map_image) { maps.site.image.setUrl(siteUrl(f.map_image)); }
    drawCurrent();
    $("frame-date").textContent = f.date + " (" + (i + 1) + " of " + frames.length + ")";
    $("frame-scene").textContent = f.scene_id;
    $("frame-scene").title = "source items: " + (f.item_ids || []).join(", ");
    $("frame-area").textContent = fmtNum(f.area_m2) + " m² (" + fmtArea(f.area_m2) + ")";
    $("frame-change").textContent = fmtPct(f.change_pct) + " against the previous frame";
    $("frame-yoy").textContent = fmtPct(f.same_season_change_pct);
    $("frame-clear").textContent = fmtNum(f.clear_fraction * 100, 0) + " % of the site";
    var conf = $("frame-confidence");
    conf.textContent = f.low_confidence ? "low: " + (fmtReason(f.low_confidence_reason, f.clear_fraction) || "flagged") : "normal";
    conf.className = f.low_confidence ? "conf-low" : "conf-normal";
    var files = $("frame-files");
    files.innerHTML = "";
    [["mask (COG)", f.mask], ["polygon (GeoJSON)", f.polygon], ["quicklook", f.quicklook]].forEach(function (p, k) {
      if (!p[1]) { return; }
      if (k) { files.appendChild(document.createTextNode(" · ")); }
      files.appendChild(el("a", { href: siteUrl(p[1]) }, p[0]));
    });
    Array.prototype.forEach.call($("frames").tBodies[0].rows, function (tr, k) { tr.classList.toggle("selected", k === i); });
    renderChart();
    setHash();
  }

  function renderAlerts(alerts) {
    var tb = $("alerts").tBodies[0];
    tb.innerHTML = "";
    $("alerts-empty").hidden = alerts.length > 0;
    $("alerts").hidden = alerts.length === 0;
    alerts.slice().reverse().forEach(function (a) {
      var tr = el("tr", { "class": "alert-row" });
      tr.appendChild(el("td", {}, a.date));
      var td = el("td");
      td.appendChild(el("span", { "class": "level " + levelClass(a.level) }, a.level));
      tr.appendChild(td);
      tr.appendChild(el("td", {}, a.event || ""));
      tr.appendChild(el("td", {}, a.state || ""));
      tr.appendChild(el("td", {}, fmtNum(a.area_m2)));
      tr.appendChild(el("td", {}, fmtNum(a.baseline_m2)));
      tr.addEventListener("click", function () { jumpToDate(a.date); });
      tb.appendChild(tr);
    });
  }

  function jumpToDate(date) {
    var frames = state.index.frames, best = 0;
    frames.forEach(function (f, k) { if (f.date <= String(date).slice(0, 10)) { best = k; } });
    selectFrame(best);
  }

  function renderDownloads(idx) {
    var ul = $("downloads");
    ul.innerHTML = "";
    var names = { series_csv: "Area series (CSV)", series_json: "Area series (JSON)",
      polygons_geojson: "Outlines, all dates (GeoJSON, lon/lat)", polygons_parquet: "Outlines, all dates (GeoParquet, UTM)" };
    Object.keys(idx.files || {}).forEach(function (k) {
      var li = el("li"); li.appendChild(el("a", { href: siteUrl(idx.files[k]) }, names[k] || k)); ul.appendChild(li);
    });
    Object.keys(idx.plots || {}).forEach(function (k) {
      var li = el("li"); li.appendChild(el("a", { href: siteUrl(idx.plots[k]), "class": "plot" }, "Plot: " + k.replace(/_/g, " ")));
      ul.appendChild(li);
    });
    if (idx.stac && idx.stac.collection) {
      var li = el("li"); li.appendChild(el("a", { href: siteUrl(idx.stac.collection) }, "STAC collection")); ul.appendChild(li);
    }
  }

  function renderFrameTable(frames) {
    var tb = $("frames").tBodies[0];
    tb.innerHTML = "";
    frames.forEach(function (f, k) {
      var tr = el("tr", { "class": f.low_confidence ? "low" : "" });
      [f.date, fmtNum(f.area_m2), fmtPct(f.change_pct), fmtNum(f.clear_fraction * 100) + " %",
        f.low_confidence ? "low: " + fmtReason(f.low_confidence_reason, f.clear_fraction) : "normal"].forEach(function (v) { tr.appendChild(el("td", {}, v)); });
      tr.addEventListener("click", function () { selectFrame(k); });
      tb.appendChild(tr);
    });
  }

  // ---- area chart (plain SVG) --------------------------------------------------------------------------------
  function renderChart() {
    var svg = $("chart"), frames = state.index.frames, alerts = state.index.alerts || [];
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var W = 900, H = 260, L0 = 70, R = 12, T = 12, B = 28;
    var t = function (d) { return Date.parse(String(d).slice(0, 10) + "T00:00:00Z"); };
    var t0 = t(frames[0].date), t1 = t(frames[frames.length - 1].date);
    alerts.forEach(function (a) { var x = t(a.date); if (!isNaN(x)) { t0 = Math.min(t0, x); t1 = Math.max(t1, x); } });
    if (t1 === t0) { t0 -= DAY * 15; t1 += DAY * 15; }
    var raw = frames.map(function (f) { return Number(f.area_m2) || 0; });
    var big = Math.max.apply(null, raw) >= 1e5;  // km² from 0.1 km² up, m² below: ticks stay round numbers
    var unit = big ? "km²" : "m²", k = big ? 1e-6 : 1;
    var areas = raw.map(function (a) { return a * k; });
    var step = niceStep(Math.max.apply(null, areas.concat([big ? 1e-3 : 1])) * 1.05, 4);
    var amax = Math.ceil(Math.max.apply(null, areas.concat([step])) * 1.05 / step) * step;
    var dec = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    var X = function (ms) { return L0 + (ms - t0) / (t1 - t0) * (W - L0 - R); };
    var Y = function (a) { return H - B - a / amax * (H - T - B); };
    for (var v = 0; v <= amax + step / 2; v += step) {
      svg.appendChild(el("svg:line", { x1: L0, x2: W - R, y1: Y(v), y2: Y(v), "class": "grid" }));
      svg.appendChild(el("svg:text", { x: L0 - 6, y: Y(v) + 4, "text-anchor": "end", "class": "ytick" },
        v.toLocaleString("en-US", { minimumFractionDigits: dec, maximumFractionDigits: dec })));
    }
    svg.appendChild(el("svg:text", { x: L0 + 6, y: T + 10 }, "scar area, " + unit));
    var y0 = new Date(t0).getUTCFullYear(), y1 = new Date(t1).getUTCFullYear();
    for (var y = y0; y <= y1; y++) {
      [0, 6].forEach(function (m) {
        var ms = Date.UTC(y, m, 1);
        if (ms < t0 || ms > t1) { return; }
        svg.appendChild(el("svg:line", { x1: X(ms), x2: X(ms), y1: T, y2: H - B, "class": "grid" }));
        svg.appendChild(el("svg:text", { x: X(ms), y: H - 10, "text-anchor": "middle" }, m ? "Jul " + y : "Jan " + y));
      });
    }
    svg.appendChild(el("svg:line", { x1: L0, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }));
    alerts.forEach(function (a) {
      var x = X(t(a.date));
      if (isNaN(x)) { return; }
      var line = el("svg:line", { x1: x, x2: x, y1: T, y2: H - B, "class": "alert",
        stroke: LEVEL_COLORS[levelClass(a.level)] || "#888", "stroke-dasharray": a.state === "confirmed" ? "" : "4 3" });
      line.appendChild(el("svg:title", {}, "alert " + a.level + " (" + (a.state || "") + ") on " + a.date));
      svg.appendChild(line);
    });
    svg.appendChild(el("svg:path", { "class": "line", d: frames.map(function (f, i) {
      return (i ? "L" : "M") + X(t(f.date)).toFixed(1) + "," + Y(areas[i]).toFixed(1); }).join("") }));
    frames.forEach(function (f, i) {
      var c = el("svg:circle", { cx: X(t(f.date)), cy: Y(areas[i]), r: f.low_confidence ? 4 : 3.5,
        "class": "pt" + (f.low_confidence ? " low" : ""), "data-i": i });
      c.appendChild(el("svg:title", {}, f.date + ": " + fmtNum(f.area_m2) + " m²" +
        (f.low_confidence ? " (low confidence: " + fmtReason(f.low_confidence_reason, f.clear_fraction) + ")" : "")));
      c.addEventListener("click", function () { selectFrame(i); });
      svg.appendChild(c);
    });
    var s = frames[state.i];
    svg.appendChild(el("svg:circle", { cx: X(t(s.date)), cy: Y(areas[state.i]), r: 8, "class": "sel", id: "chart-selected" }));
  }

  // ---- start -------------------------------------------------------------------------------------------------
  function route() {
    if (!state.sites.length) { return; }
    var h = parseHash();
    if (h.site) {
      if (!state.site || state.site.id !== h.site || state.view !== "site") {
        selectSite(h.site, h.date);
      } else if (h.date && state.index && state.index.frames[state.i] && state.index.frames[state.i].date !== h.date) {
        jumpToDate(h.date);  // a link to another date of the open site
      }
    } else {
      showOverview();
    }
  }

  function init() {
    $("slider").addEventListener("input", function () { selectFrame(Number(this.value)); });
    $("prev").addEventListener("click", function () { selectFrame(state.i - 1); });
    $("next").addEventListener("click", function () { selectFrame(state.i + 1); });
    $("show-first").addEventListener("change", function () {
      var m = maps.site; if (m && m.first) { if (this.checked) { m.first.addTo(m); } else { m.removeLayer(m.first); } }
    });
    $("show-current").addEventListener("change", function () {
      var m = maps.site; if (m && m.current) { if (this.checked) { m.current.addTo(m); } else { m.removeLayer(m.current); } }
    });
    $("show-image").addEventListener("change", function () {
      var m = maps.site; if (m && m.image) { if (this.checked) { m.image.addTo(m); } else { m.removeLayer(m.image); } }
    });
    document.addEventListener("keydown", function (e) {
      if (!state.index || state.view !== "site" || e.target.tagName === "INPUT") { return; }
      if (e.key === "ArrowLeft") { selectFrame(state.i - 1); }
      if (e.key === "ArrowRight") { selectFrame(state.i + 1); }
    });
    window.addEventListener("hashchange", route);
    if (typeof L === "undefined") {
      $("global-status").textContent = "The map library (vendor/leaflet/leaflet.js) did not load: publish the " +
        "dashboard again (scarmon publish).";
      return;
    }
    var config = fetchJSON("config.json").then(function (c) { state.config = c || { basemap: null }; })
      .catch(function () { state.config = { basemap: null }; });  // no config: no basemap
    var sites = fetchJSON(ROOT + "sites.json");
    Promise.all([sites, config]).then(function (res) {
      var doc = res[0];
      state.sites = (doc && Array.isArray(doc.sites)) ? doc.sites : [];
      renderSites();
      if (!state.sites.length) { $("global-status").textContent = "No sites published in this store yet."; return; }
      loadStatuses();
      route();
    }).catch(function (err) {
      state.sites = [];
      renderSites();
      $("global-status").textContent = "Could not load the list of sites (" + err.message + "). " +
        "Serve the store folder over HTTP (e.g. python -m http.server) and open dashboard/index.html.";
    });
    document.body.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
