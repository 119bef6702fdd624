"""http_check steps against a local http.server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployments.runners.base import StepFailed
from deployments.runners.http_check import HttpCheckRunner

pytestmark = pytest.mark.slow


class HealthServer:
    """A tiny service: answers each path with queued statuses (the last repeats)."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[int]] = {}
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: dict) -> None:
                queue = owner.statuses.get(self.path, [404])
                status = queue.pop(0) if len(queue) > 1 else queue[0]
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                self._answer({"status": "ok"})

            def do_POST(self):  # noqa: N802
                owner.bodies.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                self._answer({"fraud_probability": 0.02, "model_version": "7"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def service():
    server = HealthServer()
    yield server
    server.server.shutdown()


def config(urls: list[str], **extra) -> dict:
    # A check that passes ends at its first 2xx: the timeout is only a loaded machine's margin.
    return {"urls": urls, "interval_seconds": 0.05, "timeout_seconds": 30, **extra}


def test_it_passes_when_every_url_answers_2xx(make_ctx, service):
    service.statuses = {"/health": [200], "/health/ready": [204]}
    ctx = make_ctx(config([service.url("/health"), service.url("/health/ready")]))

    outputs = HttpCheckRunner().run(ctx)

    assert outputs["checked"] == {service.url("/health"): 200, service.url("/health/ready"): 204}


def test_it_keeps_polling_through_errors_until_2xx(make_ctx, service):
    service.statuses = {"/health/ready": [500, 503, 200]}
    ctx = make_ctx(config([service.url("/health/ready")]))

    outputs = HttpCheckRunner().run(ctx)

    assert outputs["checked"][service.url("/health/ready")] == 200
    assert "HTTP 500" in ctx.log.text and "HTTP 503" in ctx.log.text


def test_it_fails_when_2xx_never_comes(make_ctx, service):
    service.statuses = {"/health": [502]}
    ctx = make_ctx(config([service.url("/health")], timeout_seconds=0.5))

    with pytest.raises(StepFailed, match=r"did not answer 2xx within 0.5 s \(\d+ attempts; last: "):
        HttpCheckRunner().run(ctx)
    # What it answered is in the log. The message names the last attempt,
    # which on a starved machine may be one cut short by the deadline
    # ("unreachable (timed out)") rather than another 502.
    assert "HTTP 502" in ctx.log.text


def test_it_fails_when_nothing_listens(make_ctx):
    ctx = make_ctx(config(["http://127.0.0.1:9/health"], timeout_seconds=0.3))

    with pytest.raises(StepFailed, match="unreachable"):
        HttpCheckRunner().run(ctx)


def test_it_uses_the_environments_health_urls_by_default(make_ctx, service):
    service.statuses = {"/health/live": [200]}
    ctx = make_ctx(config([]), health_urls=[service.url("/health/live")])

    assert HttpCheckRunner().run(ctx)["checked"] == {service.url("/health/live"): 200}


def test_it_sends_the_smoke_request_with_its_json_body(make_ctx, service):
    service.statuses = {"/health": [200], "/predict": [200]}
    smoke = {
        "url": service.url("/predict"),
        "json": {"amount": 120.5, "release": "${release.version}"},
        "expect_keys": ["fraud_probability"],
    }
    ctx = make_ctx(config([service.url("/health")], smoke=smoke))

    outputs = HttpCheckRunner().run(ctx)

    assert outputs["smoke"] == {"url": service.url("/predict"), "status": 200}
    assert service.bodies == [{"amount": 120.5, "release": "1.4.0"}]


def test_it_fails_a_smoke_request_missing_expected_keys(make_ctx, service):
    service.statuses = {"/predict": [200]}
    smoke = {"url": service.url("/predict"), "json": {}, "expect_keys": ["score"]}

    with pytest.raises(StepFailed, match="without score"):
        HttpCheckRunner().run(make_ctx(config([], smoke=smoke)))


def test_it_names_the_bad_key_in_the_config():
    runner = HttpCheckRunner()
    with pytest.raises(ValueError, match="^smoke.url"):
        runner.validate_config({"smoke": {"json": {}}})
    with pytest.raises(ValueError, match="^urls"):
        runner.validate_config({"urls": "http://x"})
