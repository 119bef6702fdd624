"""Authentication of the API: hashed tokens, revocation, sessions with CSRF."""

from __future__ import annotations

from rest_framework.test import APIClient

from portal.core import tokens
from portal.core.models import ApiToken, AuditEvent

URL = "/api/v1/applications/"


def test_it_accepts_a_token_and_names_the_actor_in_the_audit_trail(users, catalog, release):
    _, key = tokens.issue(users["alice"], "ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(URL).status_code == 200
    response = client.post(
        "/api/v1/deployments/",
        {"release": release.pk, "environment": catalog.environments.get(slug="dev").pk,
         "reason": "smoke"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201
    event = AuditEvent.objects.filter(action="deployment.requested").latest("seq")
    assert event.actor_name == "alice"
    assert event.request_id == response["X-Request-ID"]


def test_it_stores_only_the_hash_of_the_key(users):
    token, key = tokens.issue(users["alice"], "ci")
    token.refresh_from_db()
    assert key not in (token.key_hash, token.hint)
    assert not ApiToken.objects.filter(key_hash=key).exists()
    stored = list(ApiToken.objects.values_list("name", "key_hash", "hint"))
    assert all(key not in value for row in stored for value in row)
    assert all(key not in str(e.after) for e in AuditEvent.objects.all())


def test_it_refuses_a_revoked_token(users, catalog):
    token, key = tokens.issue(users["alice"], "ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(URL).status_code == 200
    tokens.revoke(token)
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Invalid or revoked token.",
        "request_id": response["X-Request-ID"],
    }


def test_it_refuses_an_unknown_token(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token gty_not-a-real-key")
    assert client.get(URL).status_code == 401


def test_it_refuses_anonymous_callers_with_json(anonymous, catalog):
    response = anonymous.get(URL)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"] == "Bearer"
    assert "detail" in response.json()


def test_it_enforces_csrf_on_session_requests(users, catalog, release):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    assert client.get(URL).status_code == 200
    response = client.post(
        "/api/v1/deployments/",
        {"release": release.pk, "environment": catalog.environments.get(slug="dev").pk,
         "reason": "smoke"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not release.deployments.exists()


def test_it_answers_malformed_json_with_400(api, catalog):
    response = api("alice").post(
        "/api/v1/releases/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_it_accepts_the_bearer_scheme_the_tokens_page_shows(users, catalog):
    _, key = tokens.issue(users["alice"], "ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get(URL)
    assert response.status_code == 200
    assert [a["slug"] for a in response.json()] == ["fraud-detector"]


def test_it_locks_an_address_out_after_five_wrong_tokens(users, catalog):
    _, key = tokens.issue(users["alice"], "ci")
    guesser = APIClient()
    for n in range(4):
        guesser.credentials(HTTP_AUTHORIZATION=f"Bearer gty_guess-{n}")
        assert guesser.get(URL).status_code == 401
    guesser.credentials(HTTP_AUTHORIZATION="Bearer gty_guess-5")
    assert guesser.get(URL).status_code == 429
    # The right key from the same address is refused until the window passes...
    guesser.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = guesser.get(URL)
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.json()["detail"]
    # ...and works from another.
    assert guesser.get(URL, REMOTE_ADDR="192.0.2.10").status_code == 200
    failures = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert [e.after for e in failures] == [{"via": "api token"}] * 4
