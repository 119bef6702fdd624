"""Per-request context for the audit trail: request id, client IP, actor."""

from __future__ import annotations

import ipaddress
import logging
import re

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
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


class RedisDownMiddleware:
    """A request that needed Redis while it was down gets a 503 saying so (JSON
    under /api/), not a 500: sign-in counts attempts there, pages read the
    cache, requests enqueue jobs. Last in MIDDLEWARE, so it sees the view's
    exception first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, RedisConnectionError | RedisTimeoutError):
            return None
        log.warning("Redis unreachable during %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            body = {"detail": REDIS_DOWN, "request_id": getattr(request, "id", "")}
            return JsonResponse(body, status=503)
        return HttpResponse(
            render_to_string("503.html", {"message": REDIS_DOWN, "request": request}),
            status=503,
        )
