// Fikiri Jobs dashboard: confirm destructive actions, refresh the overview's counts.
//
// window.FikiriDashboard is the seam for whatever else feeds the overview:
//   applyOverview(data)  writes a /dashboard/api/overview payload into the page (an SSE stream can
//                        call it with each event instead of waiting for the 3-second poll);
//   listeners            functions called with each payload (the throughput chart is one);
//   params               query parameters of the poll (the chart puts its range here);
//   refresh()            polls now.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  function cellText(value) {
    // Same rule as _queue_table.html: booleans read yes/no.
    if (value === true) { return "yes"; }
    if (value === false) { return "no"; }
    return value === undefined || value === null ? "" : String(value);
  }

  var api = { listeners: [], params: {} };

  api.applyOverview = function (data) {
    (data.queues || []).forEach(function (q) {
      var row = document.querySelector('tr[data-queue="' + q.queue + '"]');
      if (!row) { return; }
      row.querySelectorAll("[data-key]").forEach(function (cell) {
        var key = cell.getAttribute("data-key");
        if (key in q) { cell.textContent = cellText(q[key]); }
      });
    });
    var fallback = document.getElementById("fallback");
    if (fallback) { fallback.textContent = data.fallback_pending + " job(s) in the in-process fallback"; }
    api.listeners.forEach(function (listener) { listener(data); });
  };

  api.refresh = function () {
    var query = new URLSearchParams(api.params).toString();
    return fetch("api/overview" + (query ? "?" + query : ""), { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (body) {
      if (body && body.success) { api.applyOverview(body.data); }
    }).catch(function () { /* the next tick tries again */ });
  };

  window.FikiriDashboard = api;
  if (document.getElementById("queue-stats")) { window.setInterval(api.refresh, 3000); }
})();
