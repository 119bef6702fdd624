"""A FAKE Prometheus Alertmanager: no Alertmanager binary can run here.

It answers `GET /api/v2/alerts` with alerts in the API v2 shape
(`gettableAlerts`: labels, annotations, startsAt, endsAt, updatedAt,
fingerprint, receivers, status{state, silencedBy, inhibitedBy},
generatorURL) and applies the query's `filter` matchers and `active` /
`silenced` / `inhibited` flags the way Alertmanager does, so a client that
builds its query wrongly gets the wrong alerts, as it would in production.
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
    fingerprint = hashlib.sha256(json.dumps(all_labels, sort_keys=True).encode()).hexdigest()[:16]
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


def _holds(labels: dict, name: str, op: str, value: str) -> bool:
    actual = labels.get(name, "")
    if op in ("=", "!="):
        return (actual == value) == (op == "=")
    return (re.fullmatch(value, actual) is not None) == (op == "=~")


class FakeAlertmanager:
    """Serves `alerts` on a free port; `queries` keeps every query string asked.

    `answer` replaces the JSON body (e.g. b"<html>" for a proxy's error page);
    `delay` makes every answer that many seconds late.
    """

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.queries: list[dict[str, list[str]]] = []
        self.answer: bytes | None = None
        self.delay = 0.0
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

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

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

    def start(self) -> FakeAlertmanager:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
