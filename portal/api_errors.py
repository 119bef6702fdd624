"""JSON errors for the API: every error names the field it is about."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.core.roles import PolicyError

# Redis holds the queues, the cache and the sign-in throttle's counters: a
# request that needed it was not carried out (its transaction rolled back).
REDIS_DOWN = (
    "Redis (the job queue, cache and sign-in throttle) is not answering; nothing was "
    "requested. Try again in a minute; if it persists, the portal's Redis is down."
)


def exception_handler(exc, context):
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return Response({"detail": REDIS_DOWN}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, PolicyError):
        body = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
            body[exc.field] = [exc.message]
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(errors, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
