// The dashboard's live part: follow the registry's event stream (and, on a configuration
// document's page, its service's configuration stream), and on each change fetch the page's
// main content again (rendered by the registry, as without JavaScript). EventSource
// reconnects by itself; the header says whether the page is live.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var content = document.getElementById("content");
  var pending = null;

  function say(text, state) { live.textContent = text; live.className = "live " + state; }

  function applyFilter() {
    var input = document.getElementById("filter");
    if (!input) return;
    var wanted = input.value.trim().toLowerCase();
    document.querySelectorAll("#services tbody tr").forEach(function (row) {
      row.hidden = wanted !== "" && row.dataset.name.toLowerCase().indexOf(wanted) < 0;
    });
  }

  function refresh() {
    pending = null;
    var url = new URL(location.href);
    url.searchParams.delete("filter");
    url.searchParams.set("fragment", "1");
    var filter = document.getElementById("filter");
    var typed = filter ? filter.value : null;
    var focused = filter && document.activeElement === filter;
    fetch(url, { headers: { "Accept": "text/html" } }).then(function (response) {
      if (!response.ok) throw new Error(response.status);
      return response.text();
    }).then(function (html) {
      content.innerHTML = html;
      // Counted, so that a test can tell when the page has caught up.
      document.body.dataset.refreshes = String((+document.body.dataset.refreshes || 0) + 1);
      var input = document.getElementById("filter");
      if (input && typed !== null) { input.value = typed; if (focused) input.focus(); }
      applyFilter();
    }).catch(function () { say("Could not refresh: retrying on the next change", "down"); });
  }

  function schedule() { if (!pending) pending = setTimeout(refresh, 100); }

  document.addEventListener("input", function (event) { if (event.target.id === "filter") applyFilter(); });
  document.addEventListener("submit", function (event) {
    if (event.target.classList.contains("filter")) { event.preventDefault(); applyFilter(); }
  });

  var events = new EventSource("/v1/events");
  ["reset", "registered", "deregistered", "state_changed"].forEach(function (kind) {
    events.addEventListener(kind, schedule);
  });
  events.addEventListener("lagged", schedule);
  events.onopen = function () { say("Live", "ok"); schedule(); };
  events.onerror = function () { say("Disconnected from the registry: reconnecting…", "down"); };
  // A configuration document's page also follows its service's configuration stream: a new
  // release, a rollout's step or a rollback refreshes it too.
  var documentPage = location.pathname.match(/^\/ui\/config\/([^/]+)\/([^/]+)\/[^/]+$/);
  if (documentPage) {
    var releases = new EventSource("/v1/config/" + documentPage[1] + "/" + documentPage[2]);
    releases.addEventListener("release", schedule);
    releases.addEventListener("lagged", schedule);
  }
  applyFilter();
})();
