/* Live dashboard.
 *
 * Opens ws(s)://<host>/ws/dashboard/; each message names one environment
 * whose card changed, and the card's HTML is re-fetched from
 * /dashboard/cards/<id>/ (role-checked there) and swapped in. Bursts are
 * coalesced: one fetch per card at a time, one more if it changed meanwhile.
 * A dropped socket reconnects with back-off; while none is open the page
 * polls the whole dashboard every 10 s instead.
 *
 * Cards carry absolute times (<time datetime data-ago>), so a card kept in the
 * server's cache never goes stale; this script shows them as "5 minutes ago",
 * with the absolute time as the tooltip, and refreshes the wording each 30 s.
 */
(function () {
  "use strict";

  var root = document.getElementById("dashboard");
  if (!root) {
    return;
  }
  var state = document.getElementById("dashboard-state");
  var POLL_MS = 10000;
  var COALESCE_MS = 200;
  var MAX_BACKOFF_MS = 30000;
  var attempts = 0;
  var pollTimer = null;
  var inFlight = {};
  var dirty = {};

  var AGO_MS = 30000;

  function ago(iso) {
    var seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    var units = [["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < units.length; i += 1) {
      var n = Math.floor(seconds / units[i][1]);
      if (n >= 1) {
        return n + " " + units[i][0] + (n === 1 ? "" : "s") + " ago";
      }
    }
    return "just now";
  }

  function showAgo(scope) {
    var times = scope.querySelectorAll("time[data-ago]");
    for (var i = 0; i < times.length; i += 1) {
      var time = times[i];
      if (!time.title) {
        time.title = time.textContent;
      }
      time.textContent = ago(time.getAttribute("datetime"));
    }
  }

  function showState(text) {
    if (state) {
      state.textContent = text;
      state.className = "badge badge-" + (text === "live" ? "green" : "grey");
    }
  }

  function cardOf(id) {
    return document.getElementById("environment-card-" + id);
  }

  function refreshCard(id) {
    var card = cardOf(id);
    if (!card) {
      return;
    }
    if (inFlight[id]) {
      dirty[id] = true;
      return;
    }
    inFlight[id] = true;
    fetch(card.dataset.cardUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.status === 404) {
          card.remove(); // the role is gone: so is the card
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        var current = cardOf(id);
        if (html && current) {
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          showAgo(holder);
          current.replaceWith(holder.firstElementChild);
        }
      })
      .catch(function () { /* the next change or poll brings it */ })
      .then(function () {
        inFlight[id] = false;
        if (dirty[id]) {
          dirty[id] = false;
          setTimeout(function () { refreshCard(id); }, COALESCE_MS);
        }
      });
  }

  function pollOnce() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("dashboard");
        if (fresh) {
          root.innerHTML = fresh.innerHTML;
          showAgo(root);
        }
      })
      .catch(function () {});
  }

  function startPolling() {
    if (pollTimer === null) {
      showState("polling");
      pollTimer = setInterval(pollOnce, POLL_MS);
    }
  }

  function stopPolling() {
    if (pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + root.dataset.socket);
    } catch (error) {
      startPolling();
      return;
    }
    socket.onopen = function () {
      attempts = 0;
      stopPolling();
      showState("live");
    };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "changed") {
        setTimeout(function () { refreshCard(message.environment); }, COALESCE_MS);
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4403) {
        showState("signed out");
        return; // the session ended: reconnecting would be refused again
      }
      startPolling();
      attempts += 1;
      var delay = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, attempts - 1));
      setTimeout(connect, delay + Math.random() * 500);
    };
  }

  showAgo(root);
  setInterval(function () { showAgo(root); }, AGO_MS);
  connect();
})();
