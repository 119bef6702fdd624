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
                return
            gone = asyncio.ensure_future(receive())  # after the body, only the disconnect
            try:
                if not response.is_async:
                    parts = iter(response.streaming_content)  # read before it is replaced
                    response.streaming_content = self._pulled(parts, gone)
                await self.send_response(response, send)
            finally:
                gone.cancel()
                await sync_to_async(response.close, thread_sensitive=True)()
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

    @staticmethod
    async def _pulled(parts, gone: asyncio.Future):
        """The synchronous stream's parts, each pulled in the request's thread
        once the last has been sent (Django's send_response sends them), until
        the client is gone."""
        pull = sync_to_async(_next_part, thread_sensitive=True)
        while not gone.done():
            part = await pull(parts)
            if part is _END:
                return
            yield part
