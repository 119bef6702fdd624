"""Per-request context for the audit trail: request id, client IP, actor."""

from __future__ import annotations

import ipaddress
import re

from django.conf import settings

from portal.core import audit

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
        try:
            response = self.get_response(request)
        finally:
            audit.reset_context(token)
        response["X-Request-ID"] = request.id
        return response
