"""Logs and error reports: the request id on every record, LOG_FORMAT=json,
and Sentry (only with SENTRY_DSN) receiving no secret. The Sentry test runs
the real sentry-sdk in a process of its own, reporting to a local HTTP server
that keeps what it is sent."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from portal.core.observability import JsonFormatter, RequestIdFilter, request_id_var, scrub_event

ROOT = Path(__file__).resolve().parents[2]
BASE = {"SECRET_KEY": "k", "AUDIT_KEY": "a", "HTTPS": "0", "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "ALLOWED_HOSTS": "testserver",
        "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
# A request made in a fresh process: the failing middleware sits right after the
# request-id middleware, so nothing touches a database.
REQUEST = """
import django, sys
django.setup()
from django.conf import settings
from django.test import Client
settings.MIDDLEWARE.insert(3, "tests.portal.test_observability_logs.FailWithSecrets")
response = Client(raise_request_exception=False).get(
    "/api/v1/audit-events/?token=gty_QUERYSECRETquerysecret",
    HTTP_AUTHORIZATION="Token gty_HEADERSECRETheadersecret",
    HTTP_COOKIE="sessionid=COOKIESECRET",
)
print("STATUS", response.status_code, response["X-Request-ID"], response.content.decode())
import sentry_sdk
sentry_sdk.flush(10)
"""


class FailWithSecrets:
    """Test middleware: fails with a message quoting an API key and a URL password."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise RuntimeError(
            "lost gty_MESSAGESECRETmessagesecret talking to "
            "postgres://gantry:DBPASSWORD@db.internal/gantry"
        )


def run_request(**environ: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REQUEST], cwd=ROOT, env={**BASE, **environ},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_json_logs_carry_the_request_id():
    result = run_request(LOG_FORMAT="json")
    status, request_id, body = result.stdout.split(" ", 3)[1:]
    assert status == "500"
    assert json.loads(body) == {"detail": json.loads(body)["detail"], "request_id": request_id}
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records, result.stderr
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    failure = next(r for r in records if r["logger"] == "django.request")
    assert failure["request_id"] == request_id
    assert failure["status_code"] == 500
    assert "Traceback" in failure["exception"]  # our fault: the traceback, in one JSON string


def test_plain_logs_carry_the_request_id():
    result = run_request()
    request_id = result.stdout.split(" ")[2]
    assert f"ERROR django.request [{request_id}] Internal Server Error" in result.stderr


def test_a_bad_log_format_stops_start_up():
    result = subprocess.run([sys.executable, "-c", "import portal.settings"], cwd=ROOT,
                            env={**BASE, "LOG_FORMAT": "xml"}, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "LOG_FORMAT='xml': use one of plain, json" in result.stderr


def test_the_json_formatter_keeps_extras_and_the_context_request_id():
    record = logging.LogRecord("gantry", logging.INFO, __file__, 1, "deployed %s", ("1.4.0",), None)
    record.deployment = 42
    token = request_id_var.set("req-0123456789")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "deployed 1.4.0"
    assert entry["request_id"] == "req-0123456789"
    assert entry["deployment"] == 42


class Collector(BaseHTTPRequestHandler):
    """Stands in for Sentry's ingestion endpoint: keeps every envelope it is sent."""

    received: list[bytes] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.headers.get("Content-Encoding") in (None, "gzip")
        Collector.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry_dsn():
    Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_port}/1"
    server.shutdown()
    server.server_close()


def test_sentry_gets_the_error_and_no_secret(sentry_dsn, tmp_path):
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(sentry_dsn + "\n")
    result = run_request(SENTRY_DSN_FILE=str(dsn_file), SENTRY_ENVIRONMENT="ci")
    assert "STATUS 500" in result.stdout, result.stderr
    sent = b"\n".join(Collector.received).decode()
    assert "RuntimeError" in sent and '"environment":"ci"' in sent.replace(" ", "")
    assert "lost [Filtered] talking to postgres://[Filtered]@db.internal" in sent
    # (The DSN's public key is in the envelope: it identifies the project, as the DSN
    # in any browser does; it is not a secret.)
    for secret in ("MESSAGESECRET", "HEADERSECRET", "QUERYSECRET", "COOKIESECRET", "DBPASSWORD"):
        assert secret not in sent, secret


def test_without_a_dsn_sentry_is_not_started():
    code = "import django; django.setup(); import sys; print('sentry_sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            env=BASE,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "False", result.stderr


def test_scrub_event_removes_credentials_bodies_and_locals():
    event = {
        "message": "token gty_abcdefghijklmnop failed",
        "request": {
            "url": "https://gantry.example.com/api/v1/releases/",
            "headers": {"Authorization": "Bearer gty_abcdefghijklmnop", "Accept": "*/*"},
            "cookies": {"sessionid": "s"},
            "data": {"secret_variables": {"DB_PASSWORD": "hunter2"}},
            "query_string": "key=gty_abcdefghijklmnop",
        },
        "exception": {
            "values": [{"value": "x", "stacktrace": {"frames": [{"vars": {"key": "k"}}]}}]
        },
    }
    scrubbed = scrub_event(event)
    assert scrubbed["request"]["headers"] == {"Authorization": "[Filtered]", "Accept": "*/*"}
    assert "cookies" not in scrubbed["request"] and "data" not in scrubbed["request"]
    assert "gty_" not in json.dumps(scrubbed)
    assert "vars" not in scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
