"""JSON errors for the API: every error under /api/ is JSON with the right
status, a `detail` a person can act on and the `request_id` to quote, never
the HTML page. Field errors also name the field ({"version": [...]}).

Two ways in: DRF's exception handler (errors inside an API view, including
unexpected exceptions) and Django's error handlers (portal/urls.py), which
answer JSON for /api/ paths (unknown API URLs, errors outside a view, CSRF).
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, JsonResponse
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from portal.core import audit
from portal.core.api_params import out_of_range_ids
from portal.core.middleware import unavailable_message
from portal.core.roles import PolicyError

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
SERVER_ERROR = "Something went wrong on our side; quote the request id if you report it."


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def request_id_of(request) -> str:
    return getattr(request, "id", "") or audit.current_context().request_id


def _summary(errors: dict) -> str:
    """A one-line `detail` for field errors: the first field and its first message."""
    for field, messages in errors.items():
        message = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(message, dict):  # nested serializer: name the inner field too
            inner = _summary(message)
            return f"{field}.{inner}" if inner else str(field)
        return f"{field}: {message}" if field != "non_field_errors" else str(message)
    return "The request is not valid."


def with_request_id(body, request_id: str) -> dict:
    """The error body with `detail` and `request_id` (field errors kept as they are)."""
    if isinstance(body, list):  # DRF's ValidationError(["message"])
        body = {"detail": " ".join(str(item) for item in body)}
    body = dict(body)
    body.setdefault("detail", _summary(body))
    body["request_id"] = request_id
    return body


def exception_handler(exc, context):
    request = context.get("request")
    if unavailable := unavailable_message(exc):
        # Redis holds the queues, the cache and the sign-in throttle's counters,
        # PostgreSQL everything else: the request was not carried out (its
        # transaction rolled back).
        set_rollback()
        log.warning("%s during %s", type(exc).__name__, getattr(request, "path", "?"))
        response = Response({"detail": unavailable}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    elif isinstance(exc, PolicyError):
        body = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
            body[exc.field] = [exc.message]
        response = Response(body, status=exc.status_code)
    elif isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        response = Response(errors, status=status.HTTP_400_BAD_REQUEST)
    else:
        response = drf_exception_handler(exc, context)
    if response is None:
        # Not an error a client can cause: logged with its traceback (and sent to
        # Sentry when configured), answered with the id to quote.
        set_rollback()
        log.error(
            "API error, request id %s: %s %s",
            request_id_of(request),
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        response = Response({"detail": SERVER_ERROR}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    response.data = with_request_id(response.data, request_id_of(request))
    return response


def json_error(request: HttpRequest, status_code: int, detail: str) -> JsonResponse:
    """An API error answered outside DRF (Django's error handlers)."""
    body = {"detail": detail, "request_id": request_id_of(request)}
    return JsonResponse(body, status=status_code)


class PathIdRangeMiddleware:
    """A path id a bigint column cannot hold (/api/v1/releases/99999999999999999999/)
    is a 400 naming it before any view queries the database with it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if not is_api(request):
            return None
        errors = out_of_range_ids(view_kwargs)
        if not errors:
            return None
        # `pk` is what the URL pattern calls it; the API's description calls it `id`.
        named = {"id" if name == "pk" else name: [message] for name, message in errors.items()}
        body = with_request_id(named, request_id_of(request))
        return JsonResponse(body, status=400)
