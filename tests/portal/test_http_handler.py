"""The web server's HTTP handler (portal/http_handler.py): each request runs in
one hand-off to a thread of its own, and a streaming response is sent part by
part as it is pulled, in that same thread, until the client goes away.

Driven in-process as uvicorn drives it (scope, receive, send), then once
through a real uvicorn with the audit export."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import urllib.request

import pytest
from django.core import signals
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.test import Client
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt

from portal import urls as portal_urls
from portal.core import audit
from portal.core.models import AuditEvent
from portal.http_handler import SyncASGIHandler
from tests.servers import web_server

PARTS = 5
seen: dict = {}


def page(request):
    seen["view"] = threading.get_ident()
    return HttpResponse("a page")


@csrf_exempt
def echo(request):
    return HttpResponse(f"{request.method} {len(request.body)} bytes")


def stream(request):
    def parts():
        try:
            for index in range(PARTS):
                seen.setdefault("pulled_in", set()).add(threading.get_ident())
                seen["pulled"] = index + 1
                yield f"part {index}\n"
        finally:
            seen["stream_closed"] = True

    seen["view"] = threading.get_ident()
    return StreamingHttpResponse(parts(), content_type="text/plain")


def download(request):
    seen["file"] = open(seen["path"], "rb")  # noqa: SIM115 - FileResponse closes it
    return FileResponse(seen["file"], as_attachment=True)


def boom(request):
    raise RuntimeError("an unexpected failure")


# The portal's own pages and error handlers, and these.
urlpatterns = [
    path("t/page/", page),
    path("t/echo/", echo),
    path("t/stream/", stream),
    path("t/download/", download),
    path("t/boom/", boom),
    *portal_urls.urlpatterns,
]
handler404 = portal_urls.handler404
handler500 = portal_urls.handler500


@pytest.fixture(autouse=True)
def test_urls(settings):
    settings.ROOT_URLCONF = __name__
    seen.clear()
    started = lambda **kwargs: seen.__setitem__("started", threading.get_ident())  # noqa: E731
    finished = lambda **kwargs: seen.__setitem__("finished", threading.get_ident())  # noqa: E731
    signals.request_started.connect(started, weak=False)
    signals.request_finished.connect(finished, weak=False)
    yield
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def scope(url: str, method: str = "GET") -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": url, "raw_path": url.encode(),
        "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }  # fmt: skip


def serve(url: str, method: str = "GET", body: bytes = b"", leave_after_first_part=False):
    """Run one request through the handler as a server would; returns the
    messages sent, each with what the stream had pulled when it was sent."""

    async def run():
        inbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "http.request", "body": body, "more_body": False})
        sent = []

        async def send(message):
            sent.append({**message, "pulled": seen.get("pulled"), "finished": "finished" in seen})
            if leave_after_first_part and message.get("body"):
                await inbox.put({"type": "http.disconnect"})

        seen["loop"] = threading.get_ident()
        await SyncASGIHandler()(scope(url, method), inbox.get, send)
        return sent

    return asyncio.run(run())


def content(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_page_runs_in_one_thread_and_is_finished_before_it_is_sent():
    sent = serve("/t/page/")
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert content(sent) == b"a page"
    # Signals, middleware and view in the request's thread, not on the loop.
    assert seen["started"] == seen["view"] == seen["finished"] != seen["loop"]
    # request_finished (the database connection back to its pool) came first.
    assert sent[0]["finished"]


def test_a_request_body_reaches_the_view():
    sent = serve("/t/echo/", method="POST", body=b"x" * 70_000)
    assert content(sent) == b"POST 70000 bytes"


def test_a_stream_is_sent_as_it_is_pulled_in_the_requests_thread():
    sent = serve("/t/stream/")
    parts = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert content(sent) == b"".join(f"part {i}\n".encode() for i in range(PARTS))
    # Each part left before the next was pulled: never the whole in memory.
    assert [m["pulled"] for m in parts] == list(range(1, PARTS + 1))
    assert seen["pulled_in"] == {seen["view"]} and seen["view"] != seen["loop"]
    assert sent[-1] == {"type": "http.response.body", "pulled": PARTS, "finished": False}
    assert seen["stream_closed"] and seen["finished"] == seen["view"]


def test_a_client_that_leaves_stops_the_stream_and_the_response_is_closed():
    sent = serve("/t/stream/", leave_after_first_part=True)
    assert seen["pulled"] < PARTS
    assert b"part 0\n" in content(sent)
    assert seen["stream_closed"] and "finished" in seen


def test_a_file_is_sent_whole_in_blocks_and_closed(tmp_path):
    # More than one 64 KiB block, and not a whole number of them.
    seen["path"] = tmp_path / "plan.json"
    seen["path"].write_bytes(bytes(range(256)) * 1000)
    sent = serve("/t/download/")
    headers = dict(sent[0]["headers"])
    assert content(sent) == seen["path"].read_bytes()
    assert int(headers[b"Content-Length"]) == 256_000
    assert headers[b"Content-Disposition"] == b'attachment; filename="plan.json"'
    assert len([m for m in sent if m.get("body")]) == 4  # 64 KiB blocks
    assert seen["file"].closed


def test_an_unexpected_error_is_the_500_page_not_a_traceback():
    sent = serve("/t/boom/")
    assert sent[0]["status"] == 500
    assert b"Traceback" not in content(sent) and b"an unexpected failure" not in content(sent)
    assert seen["started"] == seen["finished"]


def test_a_missing_page_is_a_404():
    assert serve("/t/nowhere/")[0]["status"] == 404


def test_it_serves_http_only():
    async def run():
        await SyncASGIHandler()({"type": "websocket"}, None, None)

    with pytest.raises(ValueError, match="HTTP only"):
        asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_the_audit_export_streams_whole_through_the_server(users, settings, tmp_path):
    """Through uvicorn: more rows than one part, each exactly once."""
    settings.ROOT_URLCONF = "portal.urls"
    for index in range(2500):
        audit.record("release.registered", ("deployments.release", str(index), f"1.0.{index}"),
                     actor=users["alice"], after={"n": index})  # fmt: skip
    root = type(users["alice"]).objects.create_superuser("root", "root@example.com", "x-y-z-w")
    client = Client()
    client.force_login(root)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with web_server(tmp_path / "web.log") as url:
        export = url + reverse("audit-export-csv")
        request = urllib.request.Request(export, headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            text = response.read().decode()

    rows = list(csv.DictReader(io.StringIO(text)))
    # Every event, the export's own record included, oldest first, none twice.
    assert len(rows) == AuditEvent.objects.count() >= 2501
    assert [int(row["seq"]) for row in rows] == sorted({int(row["seq"]) for row in rows})
    assert rows[-1]["action"] == "audit.export"
