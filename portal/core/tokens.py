"""API tokens: issue one (the key is shown once, only its SHA-256 is kept),
revoke one, find the token a key belongs to. Each change is audited.

Functions rather than ApiToken methods: the audit trail is written by
portal/core/audit.py, which stands on the models, not under them.
"""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from portal.core import audit
from portal.core.models import ApiToken

TOKEN_PREFIX = "gty_"


def hash_token(key: str) -> str:
    # The key carries 256 random bits, so a plain SHA-256 is enough: there is
    # nothing to brute-force, unlike a password.
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic  # the token exists exactly when its audit event does
def issue(user, name: str) -> tuple[ApiToken, str]:
    """Create a token for user; returns the row and the clear key (never stored)."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, key_hash=hash_token(key), hint=key[:10])
    audit.record(
        "token.issued", token, after={"user": user.username, "name": name, "hint": token.hint}
    )
    return token, key


@transaction.atomic
def revoke(token: ApiToken) -> bool:
    """Revoke the token; returns False when it was already revoked."""
    now = timezone.now()
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if updated:
        token.revoked_at = now
        audit.record("token.revoked", token, before={"active": True}, after={"active": False})
    return bool(updated)
