/* Live log panel of the deployment page.
 *
 * Opens ws(s)://<host>/ws/deployments/<id>/logs/?after=<last seq>, appends the
 * lines grouped under a heading per step, and re-fetches the step list and the
 * status box when the deployment changes state. Every line carries a seq: a
 * line at or below the last one shown is dropped, and a reconnect asks for the
 * lines after it, so nothing is missed or shown twice. When the socket cannot
 * open, the panel polls the JSON API every 2 s until a socket opens again.
 *
 * Lines are untrusted output of the deploy tools: they go in with textContent
 * only (never innerHTML), after their ANSI escape sequences are removed.
 */
(function () {
  "use strict";

  var panel = document.getElementById("deployment-log");
  if (!panel) {
    return;
  }
  var FINAL = ["succeeded", "failed", "cancelled", "rejected", "expired"];
  // CSI sequences: colours (ESC [ 1;31 m) and the rare cursor movement.
  var ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]/g;
  var POLL_MS = 2000;
  var MAX_BACKOFF_MS = 30000;

  var state = document.getElementById("log-state");
  var lastSeq = 0;
  var currentStep = null;
  var currentBlock = null;
  var status = panel.dataset.status || "";
  var socket = null;
  var opened = false;
  var attempts = 0;
  var reconnectTimer = null;
  var polling = false;
  var pollTimer = null;
  var refreshTimer = null;

  function showState(text) {
    if (state) {
      state.textContent = text;
    }
  }

  function isFinal(value) {
    return FINAL.indexOf(value) !== -1;
  }

  function startStep(name) {
    var section = document.createElement("section");
    section.className = "log-step";
    var heading = document.createElement("h3");
    heading.className = "log-step-name";
    heading.textContent = name || "Deployment";
    var block = document.createElement("div");
    block.className = "log-lines";
    section.appendChild(heading);
    section.appendChild(block);
    panel.appendChild(section);
    currentStep = name;
    currentBlock = block;
  }

  // The socket sends runs of consecutive lines sharing step, stream and time
  // (deployments/logs.py, line_runs): they are shown as they come. The HTTP
  // API (the polling fallback) sends line objects, each made a run of one.
  function runsOf(lines) {
    return lines.map(function (line) {
      return { seq: line.seq, step: line.step, stream: line.stream, texts: [line.text] };
    });
  }

  function append(runs) {
    var stuck = panel.scrollHeight - panel.scrollTop - panel.clientHeight < 40;
    var newStep = false;
    for (var i = 0; i < runs.length; i++) {
      var run = runs[i];
      var step = run.step || "";
      var className = "log-line log-" + run.stream;
      // Lines at or below lastSeq are already shown (a reconnect or the poller overlapped).
      for (var j = Math.max(0, lastSeq + 1 - run.seq); j < run.texts.length; j++) {
        lastSeq = run.seq + j;
        if (currentBlock === null || step !== currentStep) {
          startStep(step);
          newStep = true;
        }
        var row = document.createElement("div");
        row.className = className;
        row.dataset.seq = String(lastSeq);
        row.textContent = String(run.texts[j]).replace(ANSI, "");
        currentBlock.appendChild(row);
      }
    }
    if (stuck) {
      panel.scrollTop = panel.scrollHeight; // follow the output unless the reader scrolled up
    }
    if (newStep) {
      scheduleRefresh(); // a new step started: its row in the step list changed
    }
  }

  function fetchHtml(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { "HX-Request": "true" },
    }).then(function (response) {
      if (!response.ok) {
        throw new Error(response.status);
      }
      return response.text();
    });
  }

  function replaceWith(id, html) {
    var old = document.getElementById(id);
    if (!old) {
      return;
    }
    var template = document.createElement("template");
    template.innerHTML = html.trim(); // HTML rendered (and escaped) by the server
    var fresh = template.content.firstElementChild;
    if (fresh && fresh.id === id) {
      old.replaceWith(fresh);
      if (window.htmx) {
        window.htmx.process(fresh);
      }
    }
  }

  // The page's other panels (plan, cost, policy, approvals, digest, timeline):
  // the page again, its [data-live] blocks swapped in, unless the reader is
  // typing in one (a comment, a reason): that one waits for the next change.
  function refreshPanels() {
    fetch(window.location.pathname, {credentials: "same-origin", headers: {Accept: "text/html"}})
      .then(function (response) {
        if (!response.ok) {
          throw new Error(response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var blocks = document.querySelectorAll("[data-live]");
        for (var i = 0; i < blocks.length; i++) {
          var old = blocks[i];
          var next = fresh.getElementById(old.id);
          if (!next || busy(old)) {
            continue;
          }
          old.replaceWith(next);
          if (window.htmx) {
            window.htmx.process(next);
          }
        }
      })
      .catch(function () {});
  }

  function busy(block) {
    if (block.contains(document.activeElement) && document.activeElement !== document.body) {
      return true;
    }
    var fields = block.querySelectorAll("textarea, input[type=text]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value) {
        return true;
      }
    }
    return false;
  }

  function refresh() {
    refreshTimer = null;
    refreshPanels();
    fetchHtml(panel.dataset.stepsUrl).then(function (html) {
      replaceWith("step-runs", html);
    }).catch(function () {});
    fetchHtml(panel.dataset.statusUrl).then(function (html) {
      replaceWith("deployment-status-box", html);
    }).catch(function () {});
  }

  function scheduleRefresh() {
    if (refreshTimer === null) {
      refreshTimer = window.setTimeout(refresh, 150);
    }
  }

  function onStatus(value) {
    status = value;
    if (isFinal(value)) {
      showState("finished");
      // Buttons that only make sense while the deployment runs (Cancel).
      var stale = document.querySelectorAll("[data-hide-when-final]");
      for (var i = 0; i < stale.length; i++) {
        stale[i].hidden = true;
      }
    }
    scheduleRefresh();
  }

  // -- polling fallback ----------------------------------------------------------

  function poll() {
    pollTimer = null;
    var url = panel.dataset.pollUrl + "?after=" + lastSeq;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(response.status);
        }
        return response.json();
      })
      .then(function (body) {
        append(runsOf(body.lines));
        if (body.status !== status) {
          onStatus(body.status);
        }
        if (!polling) {
          return; // a socket opened meanwhile and took over
        }
        var more = body.lines.length >= 1000;
        if (more || !isFinal(body.status)) {
          pollTimer = window.setTimeout(poll, more ? 0 : POLL_MS);
        } else {
          polling = false;
          showState("finished");
        }
      })
      .catch(function () {
        if (polling) {
          pollTimer = window.setTimeout(poll, POLL_MS);
        }
      });
  }

  function startPolling() {
    if (!polling) {
      polling = true;
      showState("polling");
      poll();
    }
  }

  function stopPolling() {
    polling = false;
    if (pollTimer !== null) {
      window.clearTimeout(pollTimer);
      pollTimer = null;
    }
  }

  // -- the socket ------------------------------------------------------------------

  function connect() {
    reconnectTimer = null;
    if (!("WebSocket" in window)) {
      startPolling();
      return;
    }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + panel.dataset.wsPath + "?after=" + lastSeq;
    opened = false;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      socket = null;
      startPolling();
      scheduleReconnect();
      return;
    }
    socket.onopen = function () {
      opened = true;
      attempts = 0;
      stopPolling();
      showState("live");
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message.type === "runs") {
        append(message.runs);
      } else if (message.type === "status") {
        onStatus(message.status);
      }
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === 4403) {
        showState("not allowed");
        return;
      }
      if (opened && isFinal(status)) {
        showState("finished");
        return;
      }
      opened = false;
      startPolling(); // keep the page current while the socket is down
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) {
      return;
    }
    attempts += 1;
    var delay = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, attempts - 1));
    delay = delay / 2 + Math.random() * (delay / 2); // jitter: viewers do not reconnect at once
    reconnectTimer = window.setTimeout(connect, delay);
  }

  connect();
})();
