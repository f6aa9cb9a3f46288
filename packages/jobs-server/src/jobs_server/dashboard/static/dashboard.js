// Progressive enhancement only: every page works without it.
// - forms with data-confirm ask before they post;
// - a page with data-refresh="N" reloads itself every N seconds while it is visible.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
(function () {
  var seconds = Number(document.body.getAttribute("data-refresh"));
  if (!seconds) return;
  setInterval(function () {
    if (document.visibilityState === "visible") window.location.reload();
  }, seconds * 1000);
})();
