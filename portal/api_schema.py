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
# PostgreSQL text cannot hold NUL, so the API refuses it in every string (400).
NO_NUL = "^[^\\x00]*$"


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
                schema = parameter.get("schema", {})
                _forbid_nul(schema)
                if schema.get("type") == "integer" and "maximum" not in schema:
                    # Ids and counts: beyond these they are refused with a 400 naming them.
                    schema.update({"minimum": 0, "maximum": BIGINT_MAX})
            for code, response in responses.items():
                if code.startswith("4") and "content" not in response:
                    responses[code] = _error_response(response.get("description", ""))
    _require_bodies_with_required_fields(result)
    _link_created_to_details(result.get("paths", {}))
    return result


def _forbid_nul(schema: dict) -> None:
    if schema.get("type") == "string" and not {"enum", "pattern", "format"} & set(schema):
        schema["pattern"] = NO_NUL


def _require_bodies_with_required_fields(result: dict) -> None:
    """A body with required fields is itself required (an empty POST is a 400)."""
    schemas = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if not body:
                continue
            for media in body.get("content", {}).values():
                schema = media.get("schema", {})
                serializer = "$ref" in schema  # a serializer's fields: stored, so no NUL
                if serializer:
                    schema = schemas.get(schema["$ref"].rpartition("/")[2], {})
                if schema.get("required"):
                    body["required"] = True
                for field in schema.get("properties", {}).values() if serializer else ():
                    _forbid_nul(field)


def _schema_ref(operation: dict, code: str) -> str | None:
    content = operation.get("responses", {}).get(code, {}).get("content", {})
    return content.get("application/json", {}).get("schema", {}).get("$ref")


def _link_created_to_details(paths: dict) -> None:
    """OpenAPI links from what a POST creates to the operations on it: the id of
    a created release leads to GET /releases/{id}/, a requested deployment's to
    its detail, log, evidence, approve, reject and cancel. Clients (and
    schemathesis' stateful tests) follow them."""
    details = {}  # response schema → the path of the GET that reads one by id
    for path, operations in paths.items():
        ref = _schema_ref(operations.get("get", {}), "200")
        if ref and path.endswith("/{id}/"):
            details[ref] = path
    for operations in paths.values():
        created = operations.get("post", {})
        detail_path = details.get(_schema_ref(created, "201"))
        if not detail_path:
            continue
        links = {}
        for path, targets in paths.items():
            if not path.startswith(detail_path):
                continue
            for method, target in targets.items():
                name = target["operationId"].removeprefix("api_v1_")
                links[name] = {
                    "operationId": target["operationId"],
                    "parameters": {"id": "$response.body#/id"},
                    "description": f"{method.upper()} {path} of what was created.",
                }
        created["responses"]["201"]["links"] = links
