// The console's live part: listen to /events (Server-Sent Events) and, on each event, fetch this page again
// with X-Fragment: 1 and swap its live region. EventSource reconnects by itself with Last-Event-ID when the
// server ends a stream, and the server replays what was missed; a reconnect also refreshes the page's data.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  var dot = document.getElementById("live-status");
  if (!region || !window.EventSource) return;
  var pending = false, again = false, opens = 0, received = 0;

  function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 200) return r.text();
        if (r.redirected || r.status === 401) window.location.assign("/login");
        return null;
      })
      .then(function (html) { if (html !== null) region.innerHTML = html; })
      .catch(function () {})
      .then(function () {
        pending = false;
        if (again) { again = false; refresh(); }
      });
  }

  var source = new EventSource("/events");
  source.onopen = function () {
    opens += 1;
    document.body.dataset.liveOpens = String(opens);
    if (dot) dot.className = "dot on";
    if (opens > 1) refresh(); // back after a gap: what was missed comes as events, and the page is re-read
  };
  source.onmessage = function () {
    received += 1;
    document.body.dataset.liveEvents = String(received);
    refresh();
  };
  source.onerror = function () { if (dot) dot.className = "dot off"; };
})();
