// Fikiri Jobs dashboard: confirm destructive actions, keep counts and job states live.
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

  // Live updates from the lifecycle events stream (/dashboard/api/events, server-sent events):
  // the overview refreshes its counts when something happened (at most every 300 ms), a job's
  // page follows the job's status. The poll stays as the fallback, slower while the stream is up.
  var eventsUrl = document.body.getAttribute("data-events");
  var statusBadge = document.getElementById("job-status");
  var overview = document.getElementById("queue-stats");
  var pollEvery = 3000, poller = null, pending = null;

  function poll(ms) {
    if (!overview) { return; }
    if (poller) { window.clearInterval(poller); }
    poller = window.setInterval(api.refresh, ms);
  }

  function refreshSoon() {
    if (pending) { return; }
    pending = window.setTimeout(function () { pending = null; api.refresh(); }, 300);
  }

  function reloadMain() {
    // The job ended: its result, error and actions come from the server. The page's <main> is
    // swapped in place (no navigation, so nothing races a reload the reader starts).
    fetch(window.location.href, { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new window.DOMParser().parseFromString(html, "text/html").querySelector("main");
      var main = document.querySelector("main");
      if (fresh && main) {
        main.innerHTML = fresh.innerHTML;
        statusBadge = document.getElementById("job-status");
      }
    }).catch(function () { /* the reader can reload */ });
  }

  function showJobEvent(event) {
    statusBadge.textContent = event.status;
    statusBadge.className = "badge " + event.status;
    var reason = document.getElementById("job-reason");
    if (reason && (event.reason || event.status !== "delayed")) { reason.textContent = event.reason || "-"; }
    if (event.status === "completed" || event.status === "failed" || event.status === "canceled" || event.status === "expired") {
      reloadMain();
    }
  }

  if (eventsUrl && window.EventSource && (overview || statusBadge)) {
    var jobId = statusBadge ? statusBadge.getAttribute("data-job-id") : null;
    var query = new URLSearchParams();
    if (jobId) { query.set("job", jobId); }
    var after = document.body.getAttribute("data-events-after");
    if (after) { query.set("last_event_id", after); }  // only what happens after the page was rendered
    var source = new window.EventSource(eventsUrl + "?" + query.toString());
    source.onopen = function () { poll(15000); document.body.setAttribute("data-live", "yes"); };
    source.onerror = function () { poll(pollEvery); document.body.setAttribute("data-live", "no"); };
    source.onmessage = function (message) {
      var event = JSON.parse(message.data);
      if (statusBadge && event.job_id === jobId) { showJobEvent(event); }
      if (overview) { refreshSoon(); }
    };
    api.events = source;
  }
  poll(pollEvery);
})();
