// Constella web panel: the node list follows the network live over Server-Sent Events.
// The server renders every fragment (escaped); this only puts it in place.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("nodes");
  if (!box || !window.EventSource) { return; }
  var source = new EventSource(box.getAttribute("data-live"));
  source.addEventListener("nodes", function (event) {
    box.innerHTML = event.data;
    box.setAttribute("data-updated", String(Date.now()));
    document.body.classList.remove("stale");
  });
  source.addEventListener("open", function () { document.body.classList.remove("stale"); });
  // EventSource reconnects by itself; meanwhile the list is shown as possibly stale.
  source.addEventListener("error", function () { document.body.classList.add("stale"); });
});
