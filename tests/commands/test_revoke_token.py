"""manage.py revoke_token"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from portal.core import tokens
from portal.core.models import ApiToken, AuditEvent


def revoke(*args: str) -> str:
    out = StringIO()
    call_command("revoke_token", *args, stdout=out)
    return out.getvalue()


def test_it_revokes_a_token_by_hint(users, catalog):
    token, key = tokens.issue(users["alice"], "laptop")
    other, _ = tokens.issue(users["alice"], "ci")
    output = revoke("alice", "--hint", token.hint)
    assert "laptop" in output
    assert key not in output
    token.refresh_from_db()
    other.refresh_from_db()
    assert not token.is_active
    assert other.is_active
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/applications/").status_code == 401
    event = AuditEvent.objects.get(action="token.revoked")
    assert event.actor_name == "alice"
    assert event.target_id == str(token.pk)


def test_it_revokes_all_tokens(users):
    for name in ("a", "b"):
        tokens.issue(users["alice"], name)
    tokens.issue(users["bob"], "bob's")
    revoke("alice", "--all")
    assert not ApiToken.objects.filter(user=users["alice"], revoked_at__isnull=True).exists()
    assert ApiToken.objects.get(user=users["bob"]).is_active
    assert AuditEvent.objects.filter(action="token.revoked", actor_name="alice").count() == 2


def test_it_does_not_revoke_another_users_token(users):
    token, _ = tokens.issue(users["bob"], "bob's")
    with pytest.raises(CommandError, match="no active token"):
        revoke("alice", "--hint", token.hint)
    token.refresh_from_db()
    assert token.is_active


def test_it_needs_hint_or_all(users):
    with pytest.raises(CommandError, match="--hint --all"):
        revoke("alice")


def test_it_refuses_a_too_short_hint(users):
    tokens.issue(users["alice"], "laptop")
    with pytest.raises(CommandError, match="at least the first 5"):
        revoke("alice", "--hint", "gty")
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()


def test_it_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        revoke("nobody", "--all")
