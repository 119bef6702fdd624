"""JSON errors for the API: every error names the field it is about."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.core.roles import PolicyError


def exception_handler(exc, context):
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
