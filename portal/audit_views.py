"""The audit trail's page and its exports.

The page pages by seq (keyset: `?before=<seq>` for older, `?after=<seq>` for
newer), so a page costs the same at event 50 or event 5,000,000 and never
counts the table. The exports stream from a server-side cursor, so memory
stays flat however many rows go out, and they carry every field an auditor
needs to re-verify the HMAC chain offline with the key.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import F, Func, TextField, Value
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from environments.models import Application, Environment
from portal.audit_filters import AuditFilter, filtered_events
from portal.audit_rows import audit_rows, compact
from portal.core import audit
from portal.core.models import ChainVerification
from portal.core.roles import visible_applications, visible_environments

PAGE_SIZE = 50
EXPORT_CHUNK = 5_000

# Export columns, in order. The *_id columns and target_type/target_id are
# what canonical() signs; the names beside them are for people.
EXPORT_COLUMNS = (
    "seq", "at", "actor_id", "actor", "action", "target_type", "target_id", "target",
    "application_id", "application", "environment_id", "environment", "before", "after",
    "ip", "request_id", "prev_hash", "hash",
)  # fmt: skip
_QUERY_FIELDS = (
    "seq", "at", "actor_id", "actor_name", "action", "target_type", "target_id",
    "target_repr", "application_id", "environment_id", "before", "after", "ip",
    "request_id", "prev_hash", "hash",
)  # fmt: skip


def _keyset_param(request: HttpRequest, name: str, errors: dict[str, str]) -> int | None:
    raw = request.GET.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        errors[name] = "Give an event number (seq)."
        return None
    return int(raw)


@require_GET
@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    """The events the user may see, newest first, 50 a page."""
    audit_filter = AuditFilter.parse(request.GET)
    errors = dict(audit_filter.errors)
    before = _keyset_param(request, "before", errors)
    after = _keyset_param(request, "after", errors)
    events, older, newer = [], None, None
    if not errors:
        scope = filtered_events(request.user, audit_filter).select_related(
            "environment__application", "application"
        )
        if after is not None:
            # Newer page: the 50 just above `after`, fetched upward then flipped.
            page = list(scope.filter(seq__gt=after).order_by("seq")[: PAGE_SIZE + 1])
            has_newer = len(page) > PAGE_SIZE
            events = list(reversed(page[:PAGE_SIZE]))
            has_older = bool(events) and scope.filter(seq__lt=events[-1].seq).exists()
        else:
            older_scope = scope.filter(seq__lt=before) if before is not None else scope
            page = list(older_scope[: PAGE_SIZE + 1])
            has_older = len(page) > PAGE_SIZE
            events = page[:PAGE_SIZE]
            has_newer = (
                before is not None and bool(events) and scope.filter(seq__gt=events[0].seq).exists()
            )
        query = audit_filter.as_query()
        if events and has_older:
            older = urlencode({**query, "before": events[-1].seq})
        if events and has_newer:
            newer = urlencode({**query, "after": events[0].seq})
    context = {
        "events": events,
        "rows": audit_rows(events),
        "filter": audit_filter,
        "errors": errors,
        "older_query": older,
        "newer_query": newer,
        "export_query": urlencode(audit_filter.as_query()),
        # The scheduled verify job's latest verdict (portal/jobs.py).
        "chain_status": ChainVerification.objects.filter(finished_at__isnull=False).first(),
        "applications": visible_applications(request.user).order_by("name"),
        "environments": visible_environments(request.user)
        .select_related("application")
        .order_by("application__name", "order"),
    }
    return render(request, "portal/audit_list.html", context, status=400 if errors else 200)


# -- exports -------------------------------------------------------------------
#
# On PostgreSQL the database formats the rows: COPY ... TO STDOUT (CSV) and
# json_build_object() (JSON) hand over finished text, and Python only passes
# chunks along. That is what makes a million-row export take seconds instead
# of minutes. Elsewhere (the SQLite demo) rows are formatted here.

# to_char() produces exactly what canonical() signs: UTC, microseconds, +00:00.
_CANONICAL_AT = Func(
    F("at"),
    template=(
        "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    ),
    output_field=TextField(),
)


def _pg_columns() -> dict:
    """EXPORT_COLUMNS as SQL expressions, in order."""
    return {
        "seq": F("seq"),
        "at": _CANONICAL_AT,
        "actor_id": F("actor_id"),
        "actor": F("actor_name"),
        "action": F("action"),
        "target_type": F("target_type"),
        "target_id": F("target_id"),
        "target": F("target_repr"),
        "application_id": F("application_id"),
        "application": F("application__slug"),
        "environment_id": F("environment_id"),
        # ||, not CONCAT(): an event without an environment exports null, not "/".
        "environment": Func(
            F("environment__application__slug"),
            F("environment__slug"),
            template="(%(expressions)s)",
            arg_joiner=" || '/' || ",
            output_field=TextField(),
        ),  # fmt: skip
        "before": F("before"),
        "after": F("after"),
        # host(): the address without the "/32" a plain ::text cast would add.
        "ip": Func(F("ip"), function="host", output_field=TextField()),
        "request_id": F("request_id"),
        "prev_hash": F("prev_hash"),
        "hash": F("hash"),
    }


def _csv_copy(events) -> Iterator[bytes]:
    """The CSV rows as PostgreSQL's COPY writes them, header first."""
    columns = _pg_columns()
    rows = events.annotate(**{f"x_{name}": expr for name, expr in columns.items()}).values_list(
        *(f"x_{name}" for name in columns)
    )
    sql, params = rows.query.sql_with_params()
    yield (",".join(EXPORT_COLUMNS) + "\n").encode()
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        buffer = bytearray()
        for data in copy:
            buffer += data
            # COPY hands over small pieces; fewer, larger writes are cheaper downstream.
            if len(buffer) >= 256 * 1024:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)


def _json_documents(events) -> Iterator[str]:
    """One JSON object per event, built by PostgreSQL, read through a server-side cursor."""
    pairs = []
    for name, expr in _pg_columns().items():
        # Typed: a bound parameter of unknown type is refused as json_build_object's key.
        pairs += [Cast(Value(name), TextField()), expr]
    document = Func(*pairs, function="json_build_object", output_field=TextField())
    return (
        events.annotate(x_document=Cast(document, TextField()))
        .values_list("x_document", flat=True)
        .iterator(chunk_size=EXPORT_CHUNK)
    )


def _scope_names() -> tuple[dict[int, str], dict[int, str]]:
    """Slugs of every application and environment, looked up once per export
    instead of joined onto every row."""
    apps = dict(Application.objects.values_list("pk", "slug"))
    envs = {
        pk: f"{app}/{slug}"
        for pk, app, slug in Environment.objects.values_list("pk", "application__slug", "slug")
    }
    return apps, envs


def _python_rows(events) -> Iterator[tuple]:
    """Rows in EXPORT_COLUMNS order, formatted in Python (databases other than PostgreSQL)."""
    apps, envs = _scope_names()
    for row in events.values_list(*_QUERY_FIELDS).iterator(chunk_size=EXPORT_CHUNK):
        (seq, at, actor_id, actor_name, action, target_type, target_id, target_repr,
         app_id, env_id, before, after, ip, request_id, prev_hash, hash_) = row  # fmt: skip
        yield (
            seq, at.astimezone(UTC).isoformat(timespec="microseconds"), actor_id, actor_name,
            action, target_type, target_id, target_repr, app_id, apps.get(app_id),
            env_id, envs.get(env_id), before, after, ip, request_id, prev_hash, hash_,
        )  # fmt: skip


class _Echo:
    """A file-like object csv.writer writes into, handing each line back."""

    def write(self, value: str) -> str:
        return value


def _csv_python(events) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    buffer: list[str] = []
    for row in _python_rows(events):
        cells = list(row)
        cells[12], cells[13] = compact(cells[12]), compact(cells[13])
        # An empty cell means null.
        buffer.append(writer.writerow(["" if v is None else v for v in cells]))
        if len(buffer) >= 1000:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def _json_array(documents: Iterable[str]) -> Iterator[str]:
    """A JSON array written a thousand objects at a time, never whole in memory."""
    yield "["
    buffer: list[str] = []
    separator = "\n"
    for document in documents:
        buffer.append(document)
        if len(buffer) >= 1000:
            yield separator + ",\n".join(buffer)
            buffer.clear()
            separator = ",\n"
    if buffer:
        yield separator + ",\n".join(buffer)
    yield "\n]\n"


def _python_documents(events) -> Iterator[str]:
    dumps = json.dumps
    for row in _python_rows(events):
        yield dumps(dict(zip(EXPORT_COLUMNS, row, strict=True)), default=str)


def _start_export(request: HttpRequest, fmt: str):
    """Parse the filters and record the export; returns (events, error response)."""
    audit_filter = AuditFilter.parse(request.GET)
    if audit_filter.errors:
        name, message = next(iter(audit_filter.errors.items()))
        return None, JsonResponse(
            {"error": message, "field": name, "errors": audit_filter.errors}, status=400
        )
    # Recorded (and committed: views run in autocommit) before the first row
    # leaves, so an export the client aborts half-way is still on the trail.
    audit.record(
        "audit.export", None, actor=request.user,
        after={"format": fmt, "filters": audit_filter.as_query()},
    )  # fmt: skip
    # Oldest first: the order in which an auditor re-walks the chain.
    return filtered_events(request.user, audit_filter).order_by("seq"), None


def _attachment(stream: Iterator, content_type: str, extension: str) -> HttpResponse:
    response = StreamingHttpResponse(stream, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="gantry-audit-{stamp}.{extension}"'
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@login_required
def export_csv(request: HttpRequest) -> HttpResponse:
    events, error = _start_export(request, "csv")
    if error is not None:
        return error
    stream = _csv_copy(events) if connection.vendor == "postgresql" else _csv_python(events)
    return _attachment(stream, "text/csv; charset=utf-8", "csv")


@require_GET
@login_required
def export_json(request: HttpRequest) -> HttpResponse:
    events, error = _start_export(request, "json")
    if error is not None:
        return error
    if connection.vendor == "postgresql":
        documents = _json_documents(events)
    else:
        documents = _python_documents(events)
    return _attachment(_json_array(documents), "application/json", "json")
