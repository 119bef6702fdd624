"""The OpenAPI description says every error an operation can answer, with the
body it has (portal/api_errors.py): `{"detail", "request_id"}`, plus the
field names for field errors. A drf-spectacular postprocessing hook, so each
endpoint only describes what is its own (409 for a duplicate, 413 for a plan
too big) and the errors every endpoint shares are added here.
"""

from __future__ import annotations

from typing import Any

from portal.core.api_params import BIGINT_MAX

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error under /api/. Field errors also carry the field's name with "
    'its messages, e.g. {"version": ["This field is required."], "detail": "version: '
    'This field is required.", "request_id": "…"}.',
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "request_id": {"type": "string", "description": "Quote it when reporting a problem."},
        "field": {"type": "string", "description": "The field a refusal is about, if any."},
    },
    "required": ["detail", "request_id"],
    "additionalProperties": {
        "type": "array",
        "items": {"type": "string"},
        "description": "A field's messages.",
    },
}
SHARED = {
    "401": "Not authenticated: send `Authorization: Token <key>` (a key from the Tokens "
    "page), or sign in.",
    "403": "Authenticated, but your role does not allow this (or the CSRF check of a "
    "signed-in session failed).",
}
BAD_INPUT = "Bad input: `detail` says what, and field errors name the field or parameter."
NOT_FOUND = "Not found, or not visible to you (the same answer, so nothing leaks)."


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def document_errors(result: dict, generator, request, public) -> dict:
    """Add the shared errors to every operation, and the error body to every 4xx."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            parameters = operation.get("parameters", [])
            for code, description in SHARED.items():
                responses.setdefault(code, {"description": description})
            if parameters or "requestBody" in operation:
                responses.setdefault("400", {"description": BAD_INPUT})
            if any(p.get("in") == "path" for p in parameters):
                responses.setdefault("404", {"description": NOT_FOUND})
            for parameter in parameters:
                if parameter.get("in") == "path" and parameter["schema"].get("type") == "integer":
                    # Beyond this the id is refused with a 400 naming it.
                    parameter["schema"].update({"minimum": 0, "maximum": BIGINT_MAX})
            for code, response in responses.items():
                if code.startswith("4") and "content" not in response:
                    responses[code] = _error_response(response.get("description", ""))
    return result
