"""Per-request context for the audit trail: request id, client IP, actor."""

from __future__ import annotations

import ipaddress
import logging
import re

from django.conf import settings
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portal.core import audit
from portal.core.observability import request_id_var

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


def client_ip(request) -> str | None:
    """The client's address, as the audit trail and the sign-in throttle see it.

    TRUSTED_PROXY_COUNT = 0: the socket's peer (REMOTE_ADDR). N > 0: the Nth
    entry from the right of X-Forwarded-For. Each trusted proxy appends the
    address it received the request from, so everything left of that was
    written by the client and is ignored: a client cannot choose its address.
    A header with fewer entries than trusted hops (a request that bypassed a
    proxy) or an entry that is no address gives the socket's peer.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    hops = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if hops <= 0:
        return remote
    # Several X-Forwarded-For headers reach Django joined by commas, in order.
    entries = [e.strip() for e in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    entries = [entry for entry in entries if entry]
    if len(entries) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-hops]))
    except ValueError:
        return remote


class RequestContextMiddleware:
    """Give every request an id (kept from X-Request-ID if well-formed) and
    make it, the IP and the user available to audit.record()."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request.id = incoming if _REQUEST_ID_RE.match(incoming) else audit.new_request_id()
        token = audit.set_context(
            audit.AuditContext(request=request, ip=client_ip(request), request_id=request.id)
        )
        log_token = request_id_var.set(request.id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(log_token)
            audit.reset_context(token)
        response["X-Request-ID"] = request.id
        return response


REDIS_DOWN = (
    "Redis (the job queue, cache and sign-in throttle) is not answering; nothing was "
    "requested or changed. Try again in a minute; if it persists, the portal's Redis is down."
)


DATABASE_DOWN = (
    "The database did not give this request a connection in time: it is not answering, "
    "or every connection is busy. Nothing was requested or changed. Try again in a minute; "
    "if it persists, the portal's PostgreSQL is down or overloaded."
)


def unavailable_message(exception: BaseException | None) -> str | None:
    """What to tell the user when `exception` says a service the request
    needed was not there (a 503), else None: Redis unreachable, or no
    database connection from the pool in time (PostgreSQL down, or every
    connection busy). The pool raises before a request's first query, so
    nothing of it was carried out."""
    if isinstance(exception, RedisConnectionError | RedisTimeoutError):
        return REDIS_DOWN
    if isinstance(exception, OperationalError) and isinstance(exception.__cause__, PoolTimeout):
        return DATABASE_DOWN
    return None


def unavailable_response(request, message: str) -> HttpResponse:
    """The 503: JSON under /api/, else the page."""
    if request.path.startswith("/api/"):
        body = {"detail": message, "request_id": getattr(request, "id", "")}
        return JsonResponse(body, status=503)
    return HttpResponse(
        render_to_string("503.html", {"message": message, "request": request}),
        status=503,
    )


class UnavailableMiddleware:
    """A view that needed Redis while it was down, or could not get a
    database connection in time (DB_POOL_TIMEOUT), answers 503 saying so,
    not 500: sign-in counts attempts in Redis, pages read the cache, requests
    enqueue jobs, and with PostgreSQL down the pool waits for a connection it
    cannot open. Last in MIDDLEWARE, so it sees the view's exception first;
    the same failure in a middleware reaches handler500, which answers the
    same (portal.views.server_error)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        message = unavailable_message(exception)
        if message is None:
            return None
        log.warning("%s %s: a service was unavailable: %s", request.method, request.path,
                    exception)  # fmt: skip
        return unavailable_response(request, message)
