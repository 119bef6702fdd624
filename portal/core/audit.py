"""The audit trail: append events to an HMAC-SHA256 chain (verified by
portal/core/audit_chain.py).

Each event is signed over its canonical content and the previous event's hash
with AUDIT_KEY, a key the database does not hold. Appends are serialised by a
database lock so that the chain never forks; callers run inside the same
transaction as the state change they record, so an event exists exactly when
the change does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from portal.core.models import AuditEvent

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises appends.
_APPEND_LOCK_ID = 0x6A6E7472


@dataclass
class AuditContext:
    """Who is acting and from where; set per request by middleware."""

    request: Any = None
    ip: str | None = None
    request_id: str = ""
    actor: Any = None  # an explicit actor outside a request (commands, jobs)


_context: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


def set_context(ctx: AuditContext | None):
    return _context.set(ctx)


def reset_context(token) -> None:
    _context.reset(token)


def current_context() -> AuditContext:
    return _context.get() or AuditContext()


def new_request_id() -> str:
    return uuid.uuid4().hex


def _current_actor(ctx: AuditContext):
    if ctx.actor is not None:
        return ctx.actor
    user = getattr(ctx.request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    return None


def _json_number(text: str) -> int | float:
    # An integral float becomes an int: PostgreSQL's jsonb would give 1e16 back
    # as 10000000000000000, and the signature must survive that round trip.
    number = float(text)
    return int(number) if number.is_integer() else number


def _normalise(value: Any) -> Any:
    """Round-trip through JSON so what is hashed is exactly what is stored."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str, sort_keys=True), parse_float=_json_number)


def _normalise_ip(ip: str | None) -> str | None:
    if not ip:
        return None
    return clean_ipv6_address(ip) if ":" in ip else ip


def canonical(
    seq: int,
    at: datetime,
    actor_id: int | None,
    actor_name: str,
    action: str,
    target_type: str,
    target_id: str,
    target_repr: str,
    application_id: int | None,
    environment_id: int | None,
    before: Any,
    after: Any,
    ip: str | None,
    request_id: str,
    prev_hash: str,
) -> bytes:
    """The bytes an event's HMAC covers. Changing this breaks every existing chain."""
    return json.dumps(
        [
            seq,
            at.astimezone(UTC).isoformat(timespec="microseconds"),
            actor_id,
            actor_name,
            action,
            target_type,
            target_id,
            target_repr,
            application_id,
            environment_id,
            before,
            after,
            ip,
            request_id,
            prev_hash,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def sign(content: bytes, key: bytes | None = None) -> str:
    return hmac.new(key or settings.AUDIT_KEY, content, hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK_ID])
    # SQLite: the IMMEDIATE transaction mode (settings) already holds the
    # database's single write lock from BEGIN.


def _describe_target(target: Any) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    if isinstance(target, tuple):
        kind, ident, text = target
        return kind, str(ident), str(text)[:200]
    return target._meta.label_lower, str(target.pk), str(target)[:200]


def _scope_of(target: Any, environment: Any, application: Any) -> tuple[int | None, int | None]:
    """Find the environment and application an event belongs to, for filtering."""
    if environment is None:
        environment = getattr(target, "environment", None)
    if application is None and isinstance(environment, int):
        # The model by reference: the trail sits below the catalog it records.
        environments = AuditEvent._meta.get_field("environment").related_model
        application = (
            environments.objects.filter(pk=environment)
            .values_list("application_id", flat=True)
            .first()
        )
    elif application is None and environment is not None:
        application = environment.application_id
    elif application is None:
        application = getattr(target, "application_id", None)
    env_id = getattr(environment, "pk", environment)
    app_id = getattr(application, "pk", application)
    return app_id, env_id


def record(
    action: str,
    target: Any = None,
    *,
    environment: Any = None,
    application: Any = None,
    before: Any = None,
    after: Any = None,
    actor: Any = None,
    actor_name: str | None = None,
):
    """Append one event to the chain, inside the caller's transaction."""
    ctx = current_context()
    actor = actor or _current_actor(ctx)
    if actor_name is None:
        actor_name = actor.get_username() if actor is not None else "system"
    target_type, target_id, target_repr = _describe_target(target)
    application_id, environment_id = _scope_of(target, environment, application)
    before, after = _normalise(before), _normalise(after)
    ip = _normalise_ip(ctx.ip)

    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        at = timezone.now()
        actor_id = actor.pk if actor is not None else None
        content = canonical(
            seq, at, actor_id, actor_name, action, target_type, target_id, target_repr,
            application_id, environment_id, before, after, ip, ctx.request_id, prev_hash,
        )  # fmt: skip
        return AuditEvent.objects.create(
            seq=seq,
            at=at,
            actor_id=actor_id,
            actor_name=actor_name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            target_repr=target_repr,
            application_id=application_id,
            environment_id=environment_id,
            before=before,
            after=after,
            ip=ip,
            request_id=ctx.request_id,
            prev_hash=prev_hash,
            hash=sign(content),
        )


# Column order shared by canonical() and the verifier's values_list().
CHAIN_FIELDS = (
    "seq", "at", "actor_id", "actor_name", "action", "target_type", "target_id",
    "target_repr", "application_id", "environment_id", "before", "after", "ip",
    "request_id", "prev_hash", "hash",
)  # fmt: skip
