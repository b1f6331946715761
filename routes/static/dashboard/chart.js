// Throughput chart of the overview: stacked completed/failed bars per minute (1 h) or per hour
// (24 h), a count axis with round ticks, a UTC time axis, a tooltip on hover (or arrow keys) and a
// range toggle. Plain SVG drawn at the element's real pixel size, so text is never stretched.
// Data: the server renders the first series into #throughput-data; later ones arrive with the
// overview refresh (FikiriDashboard.listeners), asked for with FikiriDashboard.params.range.
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("throughput-chart");
  var tooltip = document.getElementById("chart-tooltip");
  var initial = document.getElementById("throughput-data");
  var dash = window.FikiriDashboard;
  if (!svg || !tooltip || !initial || !dash) { return; }

  var MARGIN = { top: 14, right: 14, bottom: 34, left: 52 };
  var HEIGHT = 220;
  var state = { series: JSON.parse(initial.textContent), range: null, hover: null, layout: null };
  state.range = state.series.range;
  dash.params.range = state.range;

  function node(name, attrs, text) {
    var element = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { element.setAttribute(key, attrs[key]); });
    if (text !== undefined) { element.textContent = text; }
    return element;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function clock(epoch) {
    var d = new Date(epoch * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  // A round step (1, 2 or 5 times a power of ten, at least 1) giving about `ticks` intervals.
  function niceStep(max, ticks) {
    var raw = max / ticks;
    var magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / magnitude;
    var step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
    return Math.max(1, step * magnitude);
  }

  function layout(series) {
    var width = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 600);
    var points = series.points;
    var total = Math.max.apply(null, [1].concat(points.map(function (p) { return p.completed + p.failed; })));
    var step = niceStep(total, 4);
    var plotW = width - MARGIN.left - MARGIN.right, plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    return { width: width, points: points, step: step, top: Math.ceil(total / step) * step,
             plotW: plotW, plotH: plotH, slot: plotW / points.length };
  }

  function y(l, value) { return MARGIN.top + l.plotH - l.plotH * value / l.top; }

  function drawCountAxis(l) {
    var axis = node("g", { "class": "axis axis-y" });
    for (var value = 0; value <= l.top; value += l.step) {
      axis.appendChild(node("line", { "class": "grid", x1: MARGIN.left, x2: l.width - MARGIN.right, y1: y(l, value), y2: y(l, value) }));
      axis.appendChild(node("text", { x: MARGIN.left - 6, y: y(l, value) + 4, "text-anchor": "end" }, String(value)));
    }
    var unit = state.series.step === 60 ? "jobs / min" : "jobs / hour";
    axis.appendChild(node("text", { "class": "axis-title", x: -(MARGIN.top + l.plotH / 2), y: 14,
                                    transform: "rotate(-90)", "text-anchor": "middle" }, unit));
    return axis;
  }

  function drawTimeAxis(l) {
    var axis = node("g", { "class": "axis axis-x" });
    var base = MARGIN.top + l.plotH;
    axis.appendChild(node("line", { x1: MARGIN.left, x2: l.width - MARGIN.right, y1: base, y2: base }));
    var every = state.series.step === 60 ? 600 : 3 * 3600;  // a label every 10 minutes / 3 hours
    l.points.forEach(function (p, i) {
      if (p.t % every !== 0) { return; }
      var x = MARGIN.left + i * l.slot;
      axis.appendChild(node("line", { x1: x, x2: x, y1: base, y2: base + 4 }));
      axis.appendChild(node("text", { x: x, y: base + 16, "text-anchor": "middle" }, clock(p.t)));
    });
    axis.appendChild(node("text", { "class": "axis-title", x: l.width - MARGIN.right, y: base + 30, "text-anchor": "end" },
                          "time (UTC)"));
    return axis;
  }

  function drawBars(l) {
    var bars = node("g", { "class": "bars" });
    var width = Math.max(1, l.slot * 0.72);
    l.points.forEach(function (p, i) {
      var x = MARGIN.left + i * l.slot + (l.slot - width) / 2;
      var okTop = y(l, p.completed), badTop = y(l, p.completed + p.failed);
      if (p.completed) { bars.appendChild(node("rect", { "class": "bar ok", x: x, y: okTop, width: width, height: MARGIN.top + l.plotH - okTop })); }
      if (p.failed) { bars.appendChild(node("rect", { "class": "bar bad", x: x, y: badTop, width: width, height: okTop - badTop })); }
    });
    return bars;
  }

  function drawHitAreas(l) {
    // One transparent column per bucket: the hover target (and what a test can point at).
    var hits = node("g", { "class": "hits" });
    hits.appendChild(node("rect", { "class": "hover-band", x: 0, y: MARGIN.top, width: l.slot, height: l.plotH, visibility: "hidden" }));
    l.points.forEach(function (p, i) {
      hits.appendChild(node("rect", { "class": "hit", "data-index": i, "data-t": p.t, x: MARGIN.left + i * l.slot, y: MARGIN.top,
                                      width: l.slot, height: l.plotH }));
    });
    return hits;
  }

  function draw() {
    var l = layout(state.series);
    state.layout = l;
    svg.setAttribute("viewBox", "0 0 " + l.width + " " + HEIGHT);
    svg.setAttribute("data-range", state.series.range);
    svg.replaceChildren(drawCountAxis(l), drawTimeAxis(l), drawBars(l), drawHitAreas(l));
    if (l.points.every(function (p) { return !p.completed && !p.failed; })) {
      svg.appendChild(node("text", { "class": "empty", x: MARGIN.left + l.plotW / 2, y: MARGIN.top + l.plotH / 2, "text-anchor": "middle" },
                           "no executions ended in this range"));
    }
    if (state.hover !== null) { showTooltip(Math.min(state.hover, l.points.length - 1)); }
  }

  function tooltipLine(text, className) {
    var line = document.createElement("div");
    if (className) { line.className = className; }
    line.textContent = text;
    return line;
  }

  function showTooltip(index) {
    var l = state.layout, p = l.points[index];
    state.hover = index;
    var band = svg.querySelector(".hover-band");
    band.setAttribute("x", MARGIN.left + index * l.slot);
    band.setAttribute("visibility", "visible");
    tooltip.replaceChildren(
      tooltipLine(clock(p.t) + "–" + clock(p.t + state.series.step) + " UTC", "when"),
      tooltipLine(p.completed + " completed", "ok"),
      tooltipLine(p.failed + " failed", "bad"));
    tooltip.hidden = false;
    var scale = svg.getBoundingClientRect().width / l.width || 1;
    var centre = (MARGIN.left + (index + 0.5) * l.slot) * scale;
    var left = Math.min(Math.max(0, centre - tooltip.offsetWidth / 2), svg.getBoundingClientRect().width - tooltip.offsetWidth);
    tooltip.style.left = left + "px";
    tooltip.style.top = (MARGIN.top * scale) + "px";
  }

  function hideTooltip() {
    state.hover = null;
    tooltip.hidden = true;
    var band = svg.querySelector(".hover-band");
    if (band) { band.setAttribute("visibility", "hidden"); }
  }

  function indexAt(event) {
    var l = state.layout, box = svg.getBoundingClientRect();
    var x = (event.clientX - box.left) * l.width / box.width;
    var index = Math.floor((x - MARGIN.left) / l.slot);
    return index >= 0 && index < l.points.length ? index : null;
  }

  svg.addEventListener("mousemove", function (event) {
    var index = indexAt(event);
    if (index === null) { hideTooltip(); } else { showTooltip(index); }
  });
  svg.addEventListener("mouseleave", hideTooltip);
  svg.setAttribute("tabindex", "0");
  svg.addEventListener("keydown", function (event) {
    var last = state.layout.points.length - 1, current = state.hover === null ? last + 1 : state.hover;
    if (event.key === "ArrowLeft") { showTooltip(Math.max(0, current - 1)); event.preventDefault(); }
    if (event.key === "ArrowRight") { showTooltip(Math.min(last, current + 1)); event.preventDefault(); }
    if (event.key === "Escape") { hideTooltip(); }
  });
  svg.addEventListener("blur", hideTooltip);

  function selectRange(range) {
    state.range = dash.params.range = range;
    document.querySelectorAll(".range-toggle [data-range]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-range") === range));
    });
    var url = new URL(window.location.href);
    url.searchParams.set("range", range);
    window.history.replaceState(null, "", url);
    hideTooltip();
    dash.refresh();
  }

  document.querySelectorAll(".range-toggle [data-range]").forEach(function (button) {
    button.addEventListener("click", function () { selectRange(button.getAttribute("data-range")); });
  });

  dash.listeners.push(function (data) {
    // An answer to a poll sent before the toggle carries the old range: keep the chart as chosen.
    if (data.throughput && data.throughput.range === state.range) {
      state.series = data.throughput;
      draw();
    }
  });
  window.addEventListener("resize", draw);
  draw();
})();
