/* While a payment is being processed, ask every few seconds whether it is settled, and show the result when it
   is. Stops after ten minutes; the page's "Check again" link still works. The page works without this file. */
(function () {
  "use strict";
  var box = document.querySelector("[data-status-url]");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url");
  var tries = 0;
  function poll() {
    tries += 1;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state && !state.waiting) { window.location.reload(); return; }
        if (tries < 200) { window.setTimeout(poll, 3000); }
      })
      .catch(function () { if (tries < 200) { window.setTimeout(poll, 5000); } });
  }
  window.setTimeout(poll, 3000);
}());
