// Fikiri Jobs dashboard: confirm destructive actions, redraw the rate chart, refresh counts.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  function drawChart(svg, points) {
    if (!svg || !points) { return; }
    var width = 600, height = 140, pad = 6;
    var max = Math.max(1, Math.max.apply(null, points.map(function (p) { return p.completed + p.failed; })));
    var slot = (width - 2 * pad) / points.length, bar = Math.max(2, slot * 0.7);
    var parts = [];
    points.forEach(function (p, i) {
      var x = pad + i * slot + (slot - bar) / 2;
      var okH = (height - 2 * pad) * p.completed / max, badH = (height - 2 * pad) * p.failed / max;
      parts.push('<rect x="' + x + '" y="' + (height - pad - okH) + '" width="' + bar + '" height="' + okH + '" fill="#32a852"><title>' + p.completed + ' completed</title></rect>');
      parts.push('<rect x="' + x + '" y="' + (height - pad - okH - badH) + '" width="' + bar + '" height="' + badH + '" fill="#e5484d"><title>' + p.failed + ' failed</title></rect>');
    });
    svg.innerHTML = parts.join("");
  }

  var chart = document.getElementById("rate-chart");
  var initial = document.getElementById("rate-data");
  if (chart && initial) { drawChart(chart, JSON.parse(initial.textContent)); }

  function refresh() {
    fetch("api/overview", { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (body) {
      if (!body || !body.success) { return; }
      var data = body.data;
      (data.queues || []).forEach(function (q) {
        var row = document.querySelector('tr[data-queue="' + q.queue + '"]');
        if (!row) { return; }
        row.querySelectorAll("[data-key]").forEach(function (cell) { cell.textContent = q[cell.getAttribute("data-key")]; });
      });
      var fallback = document.getElementById("fallback");
      if (fallback) { fallback.textContent = data.fallback_pending + " job(s) in the in-process fallback"; }
      if (chart && data.rate) { drawChart(chart, data.rate); }
    }).catch(function () { /* next tick tries again */ });
  }

  if (document.getElementById("queue-stats")) { window.setInterval(refresh, 3000); }
})();
