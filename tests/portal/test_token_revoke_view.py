"""Revoking a token: POST only, your own tokens only."""

from __future__ import annotations

from django.urls import reverse

from portal.core import tokens
from portal.core.models import ApiToken
from tests.environments.ui import browser, last_event, messages_of


def test_it_revokes_your_token_and_audits_it(users):
    token, _ = tokens.issue(users["alice"], "ci")
    response = browser(users["alice"]).post(reverse("token-revoke", args=[token.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("tokens")
    assert "Token “ci” revoked." in messages_of(response)
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = last_event("token.revoked")
    assert event.target_id == str(token.pk)
    assert event.actor_id == users["alice"].pk


def test_it_says_so_when_already_revoked(users):
    token, _ = tokens.issue(users["alice"], "ci")
    tokens.revoke(token)
    response = browser(users["alice"]).post(reverse("token-revoke", args=[token.pk]), follow=True)
    assert "Token “ci” was already revoked." in messages_of(response)
    assert ApiToken.objects.get().revoked_at == token.revoked_at


def test_it_does_not_reveal_another_users_token(users):
    token, _ = tokens.issue(users["bob"], "bobs")
    response = browser(users["alice"]).post(reverse("token-revoke", args=[token.pk]))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert last_event("token.revoked") is None


def test_it_refuses_get(users):
    token, _ = tokens.issue(users["alice"], "ci")
    assert browser(users["alice"]).get(reverse("token-revoke", args=[token.pk])).status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


def test_it_needs_sign_in(client, users):
    token, _ = tokens.issue(users["alice"], "ci")
    response = client.post(reverse("token-revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is None
