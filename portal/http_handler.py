"""HTTP over ASGI in one hand-off per request, and streams that stream.

Gantry's middleware and views are all synchronous. Django's ASGIHandler runs
such a request by passing it between the event loop and the request's thread
five times or more: the request_started signal, the middleware chain, back
to the loop to resolve the view, the view, the template's rendering, the
log line of a 4xx, response.close(). Each pass wakes the other side, and on
a busy two-core machine each wake-up waits for a time slice: the deployment
page served through uvicorn took 33-34 ms at p95 beside the test suite
against 17-19 ms in-process (docs/PERFORMANCE.md).

This handler reads the body on the loop, then runs everything Django does for
the request (signals, middleware, view, rendering, close) in one call in the
request's own thread, as a WSGI server would, and goes back to the loop only
to send. The request keeps a thread of its own, as under Django's handler
(ThreadSensitiveContext), so its database connection never changes threads.

A streaming response (the audit export, static files) is pulled a part at a
time in that same thread and sent as it comes, until the client goes away.
Django's handler reads a synchronous iterator whole into memory first, which
would hold an entire audit export at once.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponse
from django.urls import set_script_prefix

_END = object()


def _next_part(parts):
    """The stream's next part, or _END: a StopIteration cannot cross from the
    thread to the coroutine awaiting it (asyncio refuses to put it in a
    future, and the await never returns)."""
    return next(parts, _END)


class SyncASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the request run synchronously in its thread."""

    def __init__(self):
        # Not super().__init__(): that builds the async middleware chain.
        self._middleware_chain = None
        self.load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}.")
        async with ThreadSensitiveContext():
            await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            if not response.streaming:
                await self.send_response(response, send)
            elif response.is_async:
                await self.send_response(response, send)
                await sync_to_async(response.close, thread_sensitive=True)()
            else:
                await self._stream(response, receive, send)
        finally:
            body_file.close()

    def _respond(self, scope, body_file) -> HttpResponse:
        """All of Django's work on one request, in the request's thread."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                # The server chunks the socket writes; fewer, larger reads.
                response.block_size = self.chunk_size
        if not response.streaming:
            # The body is in memory already: closing now (request_finished, so
            # the database connection goes back to the pool) saves a hand-off.
            response.close()
        return response

    async def _stream(self, response, receive, send):
        """Send a synchronous stream part by part, pulled in the request's thread."""
        # After the body, the next message the server sends is the disconnect.
        gone = asyncio.ensure_future(receive())
        pull = sync_to_async(_next_part, thread_sensitive=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": self._headers(response),
                }
            )
            parts = iter(response.streaming_content)
            while not gone.done():
                part = await pull(parts)
                if part is _END:
                    break
                for chunk, _ in self.chunk_bytes(part):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body"})
        finally:
            gone.cancel()
            await sync_to_async(response.close, thread_sensitive=True)()

    @staticmethod
    def _headers(response) -> list[tuple[bytes, bytes]]:
        headers = [
            (
                header.encode("ascii") if isinstance(header, str) else bytes(header),
                value.encode("latin1") if isinstance(value, str) else bytes(value),
            )
            for header, value in response.items()
        ]
        headers += [
            (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
            for cookie in response.cookies.values()
        ]
        return headers
