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
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from portal.core.models import AuditChainKey, AuditEvent

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises appends.
_APPEND_LOCK_ID = 0x6A6E7472
# What a key fingerprint is the HMAC of: fixed, so equal keys give equal fingerprints.
_FINGERPRINT_LABEL = b"gantry audit chain key fingerprint v1"


class AuditKeyMismatch(ImproperlyConfigured):
    """This process's AUDIT_KEY is not the key that signed the chain."""


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


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it: an HMAC of a fixed label under the key."""
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


# The key this process has found to be the chain's: checked once, not per event.
_checked_key: bytes | None = None


def forget_checked_key() -> None:
    """Check the key again before the next append (tests; a key changed at run time)."""
    global _checked_key
    _checked_key = None


def _remember_key(key: bytes) -> None:
    global _checked_key
    _checked_key = key


def _refuse_key(key: bytes, chain: str) -> AuditKeyMismatch:
    """The error naming the problem; `chain` says how the chain's key is known."""
    if getattr(settings, "AUDIT_KEY_IS_DEVELOPMENT_KEY", False):
        whose = "AUDIT_KEY is DEBUG's fixed development key, not the key this chain is signed with"
    else:
        whose = "AUDIT_KEY is not the key this chain is signed with"
    return AuditKeyMismatch(
        f"Refusing to append to the audit trail: {whose} ({chain}; this key's fingerprint is "
        f"{key_fingerprint(key)[:12]}…). One event signed with another key would break the "
        "append-only chain for good. Give the chain's key as AUDIT_KEY or AUDIT_KEY_FILE. "
        "For the demo of `make run`, leave DATABASE_URL, REDIS_URL and the keys unset: "
        "manage.py then uses the demo's settings and var/audit_key."
    )


def _check_key(key: bytes, last_seq: int | None, next_seq: int) -> None:
    """Refuse to extend a chain signed with another key (under the append lock).

    The chain's fingerprint is compared when there is one. A chain without one
    (made before fingerprints, or its row deleted) is checked against the
    signature of its last event, then given the fingerprint.
    """
    if _checked_key is not None and hmac.compare_digest(_checked_key, key):
        return
    mine = key_fingerprint(key)
    stored = AuditChainKey.objects.filter(pk=1).values_list("fingerprint", flat=True).first()
    if stored is not None:
        if not hmac.compare_digest(stored, mine):
            raise _refuse_key(key, f"the chain's key fingerprint is {stored[:12]}…")
        _remember_key(key)
        return
    if last_seq is not None:
        row = AuditEvent.objects.filter(seq=last_seq).values_list(*CHAIN_FIELDS).get()
        if not hmac.compare_digest(sign(canonical(*row[:15]), key), row[15]):
            raise _refuse_key(key, f"it does not match the signature of event #{last_seq}")
    AuditChainKey.objects.create(fingerprint=mine, first_seq=next_seq)
    # Remembered once the fingerprint is committed: a rolled-back first event
    # must leave the next append to check (and record) again.
    transaction.on_commit(lambda: _remember_key(key))


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
        key = settings.AUDIT_KEY
        _check_key(key, last[0] if last else None, seq)
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
            hash=sign(content, key),
        )


# Column order shared by canonical() and the verifier's values_list().
CHAIN_FIELDS = (
    "seq", "at", "actor_id", "actor_name", "action", "target_type", "target_id",
    "target_repr", "application_id", "environment_id", "before", "after", "ip",
    "request_id", "prev_hash", "hash",
)  # fmt: skip
