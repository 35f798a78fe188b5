// Khoa console: the only script (served from /console/static, as the Content-Security-Policy allows).
// A revealed secret value is hidden again after the number of seconds its element names, and the
// page's copy of it is dropped, so a value left on screen does not stay there.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-hide-after]").forEach(function (element) {
    var seconds = parseInt(element.getAttribute("data-hide-after"), 10) || 30;
    var note = document.querySelector("[data-hide-note]");
    window.setTimeout(function () {
      element.textContent = "(hidden again — reveal it again to see it)";
      element.classList.remove("revealed");
      element.setAttribute("data-hidden", "true");
      if (note) { note.textContent = "The value was hidden again."; }
    }, seconds * 1000);
  });
});
