/* scarmon dashboard: a static page that reads the products a store publishes, over relative HTTP URLs.
 *
 * The page lives at STORE/dashboard/index.html; it reads STORE/sites.json, then STORE/{site}/products/index.json
 * and the images/files that index names (paths relative to STORE/{site}/). No libraries, no network beyond the
 * store. Works from any static HTTP server on a store folder and from an S3 bucket (path-style URLs).
 */
(function () {
  "use strict";

  var ROOT = "../";
  var state = { sites: [], site: null, index: null, i: 0 };
  var $ = function (id) { return document.getElementById(id); };
  var SVGNS = "http://www.w3.org/2000/svg";
  var LEVEL_COLORS = { watch: "#e6a700", warning: "#e4572e", alarm: "#b0003a" };

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

  function fmtNum(v, digits) {
    if (v === null || v === undefined || v === "" || isNaN(Number(v))) { return "–"; }
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function fmtPct(v) {
    if (v === null || v === undefined || v === "" || isNaN(Number(v))) { return "–"; }
    var n = Number(v);
    return (n > 0 ? "+" : "") + n.toFixed(1) + " %";
  }
  function levelClass(level) {
    level = String(level || "none").toLowerCase();
    return ["none", "watch", "warning", "alarm"].indexOf(level) >= 0 ? level : "unknown";
  }
  function siteUrl(rel) { return ROOT + encodeURIComponent(state.site.id) + "/" + rel.split("/").map(encodeURIComponent).join("/"); }

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

  // ---- site list ---------------------------------------------------------------------------------------------
  function renderSites() {
    var ul = $("sites");
    ul.innerHTML = "";
    if (!state.sites.length) {
      ul.appendChild(el("li", { "class": "empty" }, "No sites published yet."));
      return;
    }
    state.sites.forEach(function (s) {
      var li = el("li", { "data-site": s.id, "class": s.status === "error" ? "error" : "" });
      li.appendChild(el("span", { "class": "name" }, s.name || s.id));
      li.appendChild(el("span", { "class": "level " + levelClass(s.alert_level) }, s.alert_level || "none"));
      var meta = s.status === "error" ? " publish failed" :
        (s.frames ? " " + s.frames + " frames, last " + s.last_date : " no frames yet");
      li.appendChild(el("span", { "class": "muted" }, meta));
      li.addEventListener("click", function () { selectSite(s.id); });
      ul.appendChild(li);
    });
  }

  function showSiteStatus(text, isError) {
    var box = $("site-status");
    box.textContent = text;
    box.className = "notice" + (isError ? " error" : "");
    box.hidden = !text;
  }

  function selectSite(id, date) {
    var s = state.sites.filter(function (x) { return x.id === id; })[0];
    if (!s) { s = state.sites[0]; }
    if (!s) { return; }
    state.site = s; state.index = null;
    Array.prototype.forEach.call($("sites").children, function (li) {
      li.classList.toggle("selected", li.getAttribute("data-site") === s.id);
    });
    $("site-view").hidden = false;
    $("site-title").textContent = s.name || s.id;
    $("site-level").textContent = "alert level: " + (s.alert_level || "none");
    $("site-level").className = "level " + levelClass(s.alert_level);
    $("site-meta").textContent = "";
    $("site-body").hidden = true;
    showSiteStatus("Loading…", false);
    var url = ROOT + (s.index || (encodeURIComponent(s.id) + "/products/index.json"));
    fetchJSON(url).then(function (index) {
      if (state.site !== s) { return; }
      if (!index || !Array.isArray(index.frames)) { throw new Error("products index has no frame list: " + url); }
      state.index = index;
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
    }).catch(function (err) {
      if (state.site !== s) { return; }
      var why = s.status === "error" ? "The last publish failed: " + (s.error || "unknown error") + ". " : "";
      showSiteStatus(why + "The products of this site could not be loaded (" + err.message + ").", true);
      $("site-body").hidden = true;
    });
  }

  // ---- one site ----------------------------------------------------------------------------------------------
  function renderSite(date) {
    var idx = state.index, frames = idx.frames, grid = idx.grid || { width: 1, height: 1 };
    $("site-body").hidden = false;
    $("site-level").textContent = "alert level: " + (idx.alert_level || "none");
    $("site-level").className = "level " + levelClass(idx.alert_level);
    $("site-meta").textContent = frames.length + " frames, " + frames[0].date + " to " + frames[frames.length - 1].date +
      (idx.published_at ? " · published " + idx.published_at : "");
    $("overlay").setAttribute("viewBox", "0 0 " + grid.width + " " + grid.height);
    $("boundary-first").setAttribute("d", ringsPath(frames[0].boundary_px));
    $("first-date").textContent = frames[0].date;
    var slider = $("slider");
    slider.max = String(frames.length - 1);
    var i = frames.length - 1;
    if (date) { frames.forEach(function (f, k) { if (f.date === date) { i = k; } }); }
    renderAlerts(idx.alerts || []);
    renderDownloads(idx);
    renderFrameTable(frames);
    selectFrame(i);
  }

  function ringsPath(rings) {
    return (rings || []).map(function (ring) {
      return "M" + ring.map(function (p) { return p[0] + "," + p[1]; }).join("L") + "Z";
    }).join("");
  }

  function selectFrame(i) {
    var frames = state.index.frames;
    i = Math.max(0, Math.min(frames.length - 1, i));
    state.i = i;
    var f = frames[i];
    $("slider").value = String(i);
    $("quicklook").src = siteUrl(f.quicklook);
    $("boundary").setAttribute("d", ringsPath(f.boundary_px));
    $("frame-date").textContent = f.date + " (" + (i + 1) + " of " + frames.length + ")";
    $("frame-scene").textContent = f.scene_id;
    $("frame-scene").title = "source items: " + (f.item_ids || []).join(", ");
    $("frame-area").textContent = fmtNum(f.area_m2) + " m² (" + fmtNum(f.area_m2 / 1e6, 3) + " km²)";
    $("frame-change").textContent = fmtPct(f.change_pct) + " against the previous frame";
    $("frame-yoy").textContent = fmtPct(f.same_season_change_pct);
    $("frame-clear").textContent = fmtNum(f.clear_fraction * 100, 0) + " %";
    var conf = $("frame-confidence");
    conf.textContent = f.low_confidence ? "low: " + (f.low_confidence_reason || "flagged") : "normal";
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
      polygons_geojson: "Polygons, all frames (GeoJSON)", polygons_parquet: "Polygons, all frames (GeoParquet)" };
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
        f.low_confidence ? "low: " + f.low_confidence_reason : "normal"].forEach(function (v) { tr.appendChild(el("td", {}, v)); });
      tr.addEventListener("click", function () { selectFrame(k); });
      tb.appendChild(tr);
    });
  }

  // ---- area chart (plain SVG) --------------------------------------------------------------------------------
  function renderChart() {
    var svg = $("chart"), frames = state.index.frames, alerts = state.index.alerts || [];
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var W = 900, H = 260, L = 64, R = 12, T = 12, B = 28;
    var t = function (d) { return Date.parse(String(d).slice(0, 10) + "T00:00:00Z"); };
    var t0 = t(frames[0].date), t1 = t(frames[frames.length - 1].date);
    alerts.forEach(function (a) { var x = t(a.date); if (!isNaN(x)) { t0 = Math.min(t0, x); t1 = Math.max(t1, x); } });
    if (t1 === t0) { t0 -= 864e5 * 15; t1 += 864e5 * 15; }
    var areas = frames.map(function (f) { return (Number(f.area_m2) || 0) / 1e6; });
    var amax = Math.max.apply(null, areas.concat([1e-6])) * 1.1;
    var X = function (ms) { return L + (ms - t0) / (t1 - t0) * (W - L - R); };
    var Y = function (a) { return H - B - a / amax * (H - T - B); };
    for (var k = 0; k <= 4; k++) {
      var v = amax * k / 4;
      svg.appendChild(el("svg:line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), "class": "grid" }));
      svg.appendChild(el("svg:text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(amax < 0.4 ? 3 : 2)));
    }
    svg.appendChild(el("svg:text", { x: L + 6, y: T + 10 }, "scar area, km²"));
    var y0 = new Date(t0).getUTCFullYear(), y1 = new Date(t1).getUTCFullYear();
    for (var y = y0; y <= y1; y++) {
      [0, 6].forEach(function (m) {
        var ms = Date.UTC(y, m, 1);
        if (ms < t0 || ms > t1) { return; }
        svg.appendChild(el("svg:line", { x1: X(ms), x2: X(ms), y1: T, y2: H - B, "class": "grid" }));
        svg.appendChild(el("svg:text", { x: X(ms), y: H - 10, "text-anchor": "middle" }, m ? "Jul " + y : "Jan " + y));
      });
    }
    svg.appendChild(el("svg:line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }));
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
        (f.low_confidence ? " (low confidence: " + f.low_confidence_reason + ")" : "")));
      c.addEventListener("click", function () { selectFrame(i); });
      svg.appendChild(c);
    });
    var s = frames[state.i];
    svg.appendChild(el("svg:circle", { cx: X(t(s.date)), cy: Y(areas[state.i]), r: 8, "class": "sel", id: "chart-selected" }));
  }

  // ---- start -------------------------------------------------------------------------------------------------
  function init() {
    $("slider").addEventListener("input", function () { selectFrame(Number(this.value)); });
    $("prev").addEventListener("click", function () { selectFrame(state.i - 1); });
    $("next").addEventListener("click", function () { selectFrame(state.i + 1); });
    $("show-first").addEventListener("change", function () { $("boundary-first").style.display = this.checked ? "" : "none"; });
    $("show-current").addEventListener("change", function () { $("boundary").style.display = this.checked ? "" : "none"; });
    document.addEventListener("keydown", function (e) {
      if (!state.index || e.target.tagName === "INPUT") { return; }
      if (e.key === "ArrowLeft") { selectFrame(state.i - 1); }
      if (e.key === "ArrowRight") { selectFrame(state.i + 1); }
    });
    $("quicklook").addEventListener("error", function () {
      if (state.site) { showSiteStatus("The quicklook image of this frame could not be loaded.", true); }
    });
    fetchJSON(ROOT + "sites.json").then(function (doc) {
      state.sites = (doc && Array.isArray(doc.sites)) ? doc.sites : [];
      renderSites();
      if (!state.sites.length) { $("global-status").textContent = "No sites published in this store yet."; return; }
      var h = parseHash();
      selectSite(h.site || state.sites[0].id, h.date);
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
