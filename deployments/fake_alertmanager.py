"""A FAKE Prometheus Alertmanager, for the tests that need one to misbehave
(a proxy's HTML page, a slow answer) and as the demo's STAND-IN where
Debian's `prometheus-alertmanager` cannot be installed
(deployments/sandbox_alertmanager.py).

It answers `GET /api/v2/alerts` with alerts in the API v2 shape
(`gettableAlerts`: labels, annotations, startsAt, endsAt, updatedAt,
fingerprint, receivers, status{state, silencedBy, inhibitedBy},
generatorURL) and applies the query's `filter` matchers and `active` /
`silenced` / `inhibited` flags the way Alertmanager does, so a client that
builds its query wrongly gets the wrong alerts, as it would in production.
`POST /api/v2/alerts` takes alerts as Prometheus sends them (labels,
annotations, startsAt, endsAt, generatorURL); unlike the real one, it never
expires them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FILTER_RE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(.*)"\s*$')


def alert(name: str, state: str = "active", summary: str = "", **labels: str) -> dict:
    """One alert as Alertmanager lists it; `state` is active, suppressed or unprocessed."""
    all_labels = {"alertname": name, **labels}
    fingerprint = _fingerprint(all_labels)
    return {
        "labels": all_labels,
        "annotations": {"summary": summary} if summary else {},
        "startsAt": "2026-05-01T10:00:00.000Z",
        "endsAt": "2026-05-01T10:15:00.000Z",
        "updatedAt": "2026-05-01T10:01:00.000Z",
        "fingerprint": fingerprint,
        "receivers": [{"name": "pager"}],
        "status": {
            "state": state,
            "silencedBy": ["silence-1"] if state == "suppressed" else [],
            "inhibitedBy": [],
        },
        "generatorURL": "http://prometheus:9090/graph",
    }


def _fingerprint(labels: dict) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _holds(labels: dict, name: str, op: str, value: str) -> bool:
    actual = labels.get(name, "")
    if op in ("=", "!="):
        return (actual == value) == (op == "=")
    return (re.fullmatch(value, actual) is not None) == (op == "=~")


class FakeAlertmanager:
    """Serves `alerts` on `port` (0: a free one); `queries` keeps every query string asked.

    `answer` replaces the JSON body (e.g. b"<html>" for a proxy's error page);
    `delay` makes every answer that many seconds late.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.alerts: list[dict] = []
        self.queries: list[dict[str, list[str]]] = []
        self.answer: bytes | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlsplit(self.path)
                if url.path != "/api/v2/alerts":
                    self._send(404, b'{"message": "not found"}')
                    return
                query = parse_qs(url.query)
                owner.queries.append(query)
                time.sleep(owner.delay)
                body = owner.answer
                if body is None:
                    body = json.dumps(owner.matching(query)).encode()
                self._send(200, body)

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/api/v2/alerts":
                    self._send(404, b'{"message": "not found"}')
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    posted = json.loads(self.rfile.read(length) or b"[]")
                    owner.receive(posted)
                except (ValueError, TypeError, KeyError) as error:
                    self._send(400, json.dumps({"message": str(error)}).encode())
                    return
                self._send(200, b"")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def matching(self, query: dict[str, list[str]]) -> list[dict]:
        """What Alertmanager returns for this query."""
        flags = {k: query.get(k, ["true"])[0] == "true" for k in ("active", "silenced")}
        matchers = []
        for text in query.get("filter", []):
            found = FILTER_RE.match(text)
            if not found:
                raise ValueError(f"bad filter {text!r}")
            matchers.append(found.groups())
        chosen = []
        for item in self.alerts:
            state = item["status"]["state"]
            if state == "active" and not flags["active"]:
                continue
            if state == "suppressed" and not flags["silenced"]:
                continue
            if all(_holds(item["labels"], *m) for m in matchers):
                chosen.append(item)
        return chosen

    def receive(self, posted: list) -> None:
        """Store posted alerts; one with the same labels replaces the earlier one."""
        if not isinstance(posted, list):
            raise TypeError("post a JSON list of alerts")
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        for item in posted:
            labels = item["labels"]
            if not isinstance(labels, dict) or "alertname" not in labels:
                raise ValueError("an alert needs labels with an alertname")
            stored = {
                "labels": labels,
                "annotations": item.get("annotations", {}),
                "startsAt": item.get("startsAt", now),
                "endsAt": item.get("endsAt", ""),
                "updatedAt": now,
                "fingerprint": _fingerprint(labels),
                "receivers": [{"name": "null"}],
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
                "generatorURL": item.get("generatorURL", ""),
            }
            with self.lock:
                self.alerts = [a for a in self.alerts if a["fingerprint"] != stored["fingerprint"]]
                self.alerts.append(stored)

    def start(self) -> FakeAlertmanager:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
