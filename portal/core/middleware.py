"""Per-request context for the audit trail: request id, client IP, actor."""

from __future__ import annotations

import re

from django.conf import settings

from portal.core import audit
from portal.core.observability import request_id_var

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


def client_ip(request) -> str | None:
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        # Behind our own proxy the left-most X-Forwarded-For hop is the client.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR") or None


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
