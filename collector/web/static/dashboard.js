// The dashboard refreshes its live part every 2 s: fetch the fragment, swap it in.
// Paging and filter links inside it are followed the same way (no page reload).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  if (!live) { return; }
  var url = live.getAttribute("data-refresh");
  var busy = false;

  function refresh() {
    if (busy) { return; }
    busy = true;
    fetch(url, { headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        live.innerHTML = html;
        updated.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) { updated.textContent = "collector unreachable (" + e.message + ")"; })
      .finally(function () { busy = false; });
  }

  live.addEventListener("click", function (event) {
    var link = event.target.closest("nav a");
    if (!link) { return; }
    event.preventDefault();
    var target = new URL(link.href, location.href);
    url = "/fragments/dashboard" + target.search;
    history.replaceState(null, "", "/" + target.search);
    refresh();
  });
  updated.textContent = "updated " + new Date().toLocaleTimeString();
  setInterval(refresh, 2000);
})();
