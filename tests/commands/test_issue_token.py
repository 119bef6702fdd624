"""manage.py issue_token"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from portal.core.audit import current_context
from portal.core.models import ApiToken, AuditEvent
from portal.core.tokens import hash_token


def issue(*args: str) -> list[str]:
    out = StringIO()
    call_command("issue_token", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_issues_a_token_and_prints_the_key_last(users, catalog):
    lines = issue("alice", "--name", "ci-pipeline")
    key = lines[-1]
    token = ApiToken.objects.get(user=users["alice"])
    assert token.name == "ci-pipeline"
    assert token.key_hash == hash_token(key)
    assert key.startswith(token.hint)
    # The key appears once, alone on the last line; nothing else secret is printed.
    assert all(key not in line for line in lines[:-1])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/applications/").status_code == 200


def test_it_names_the_user_in_the_audit_trail(users):
    issue("alice")
    event = AuditEvent.objects.get(action="token.issued")
    assert event.actor_name == "alice"
    assert event.actor_id == users["alice"].pk
    assert event.request_id
    assert event.after == {"user": "alice", "name": "cli", "hint": event.after["hint"]}
    assert current_context().actor is None  # reset afterwards


def test_it_stores_only_the_hash(users):
    key = issue("bob")[-1]
    assert not ApiToken.objects.filter(key_hash=key).exists()
    assert all(key not in str(e.after) for e in AuditEvent.objects.all())


def test_it_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        issue("nobody")
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.exists()


def test_it_refuses_a_deactivated_user(users):
    users["mallory"].is_active = False
    users["mallory"].save()
    with pytest.raises(CommandError, match="deactivated"):
        issue("mallory")
    assert not ApiToken.objects.exists()


def test_it_refuses_an_empty_name(users):
    with pytest.raises(CommandError, match="--name"):
        issue("alice", "--name", " ")
    assert not ApiToken.objects.exists()
