// Space-time diagram: hover a message or recording point to read it; click a
// lane (or its node) to highlight every message it sent or received.
(function () {
  "use strict";
  var box = document.getElementById("spacetime");
  var info = document.getElementById("info");
  if (!box || !info) { return; }
  var focused = null;

  function describe(el) {
    var title = el.querySelector("title");
    return title ? title.textContent : "";
  }

  box.addEventListener("mouseover", function (event) {
    var el = event.target.closest(".msg, .record, .done, .crossing, .wait");
    if (el) { info.textContent = describe(el); }
  });

  box.addEventListener("click", function (event) {
    var lane = event.target.closest(".lane, .record");
    if (!lane) { return; }
    var node = lane.getAttribute("data-node");
    focused = focused === node ? null : node;
    box.classList.toggle("focus", focused !== null);
    box.querySelectorAll(".msg").forEach(function (m) {
      var on = focused !== null &&
        (m.getAttribute("data-src") === focused || m.getAttribute("data-dst") === focused);
      m.classList.toggle("hl", on);
    });
    box.querySelectorAll(".lane").forEach(function (l) {
      l.classList.toggle("hl", l.getAttribute("data-node") === focused);
    });
    info.textContent = focused ? "following " + focused + " (click again to stop)" : "";
  });
})();
