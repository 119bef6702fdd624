"""Single sign-on against a real OpenID provider (tests/oidc.py): sign-in,
roles from groups, the re-check, a provider that is down, tampering, and
LOCAL_LOGIN=0."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from portal.core import group_roles, tokens
from portal.core.choices import Role
from portal.core.models import AuditEvent, Membership, SsoIdentity
from tests.oidc import TestIdp, free_port, oidc_provider, running_provider  # noqa: F401

CALLBACK = "http://testserver/login/sso/callback/"


def configure(settings, idp: TestIdp, *, refresh_tokens: bool = True, recheck: int = 900) -> None:
    client_id, secret = idp.register_client([CALLBACK], refresh_tokens=refresh_tokens)
    settings.OIDC_ISSUER = idp.issuer
    settings.OIDC_CLIENT_ID = client_id
    settings.OIDC_CLIENT_SECRET = secret
    settings.OIDC_RECHECK_SECONDS = recheck


@pytest.fixture
def idp(settings, oidc_provider) -> TestIdp:
    configure(settings, oidc_provider)
    return oidc_provider


@pytest.fixture
def mapped(catalog) -> None:
    """The demo's mappings: deployers and viewers on fraud-detector, approvers on production."""
    group_roles.add_mapping("gantry-deployers", Role.DEPLOYER, application=catalog)
    group_roles.add_mapping("gantry-viewers", Role.VIEWER)
    group_roles.add_mapping("gantry-approvers", Role.APPROVER,
                         environment=catalog.environments.get(slug="production"))  # fmt: skip


def start(client) -> str:
    """Begin a sign-in; returns the provider's authorization URL."""
    response = client.get(reverse("sso-login"))
    assert response.status_code == 302, response.content
    return response["Location"]


def sign_in(client, idp: TestIdp, login: str):
    """The whole flow, the provider's pages walked like a browser would."""
    return client.get(idp.authorize(start(client), login))


def roles_of(username: str) -> set[tuple[str, str, str]]:
    return set(
        Membership.objects.filter(user__username=username).values_list(
            "environment__slug", "role", "via_group"
        )
    )


def actions(*names: str) -> list[tuple[str, dict | None]]:
    return [
        (e.action, e.after) for e in AuditEvent.objects.filter(action__in=names).order_by("seq")
    ]


# -- the sign-in page ---------------------------------------------------------------------


def test_it_shows_the_sso_button_when_configured(client, db, idp):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    text = response.content.decode()
    assert "Sign in with SSO" in text
    assert 'name="password"' in text  # LOCAL_LOGIN=1: passwords too


def test_it_shows_no_sso_button_without_an_issuer(client, db, settings):
    settings.OIDC_ISSUER = ""
    assert "SSO" not in client.get(reverse("login")).content.decode()
    assert client.get(reverse("sso-login")).status_code == 503


def test_it_sends_the_browser_to_the_provider_with_pkce_state_and_nonce(client, db, idp):
    url = start(client)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{idp.issuer}/auth?")
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0]
    assert query["redirect_uri"] == [CALLBACK]
    assert "openid" in query["scope"][0].split()


# -- first sign-in ------------------------------------------------------------------------


def test_it_creates_the_user_on_first_sign_in_with_the_roles_of_their_groups(client, idp, mapped):
    idp.set_account("sub-frank", preferred_username="frank", email="frank@example.com",
                    groups=["gantry-deployers", "gantry-approvers", "unmapped"])  # fmt: skip
    response = sign_in(client, idp, "sub-frank")
    assert response.status_code == 302
    assert response["Location"] == "/"
    frank = User.objects.get(username="frank")
    assert client.session["_auth_user_id"] == str(frank.pk)
    assert frank.email == "frank@example.com"
    assert not frank.has_usable_password()
    assert roles_of("frank") == {
        ("dev", "deployer", "gantry-deployers"),
        ("staging", "deployer", "gantry-deployers"),
        ("production", "deployer", "gantry-deployers"),
        ("production", "approver", "gantry-approvers"),
    }
    identity = frank.sso_identity
    assert (identity.issuer, identity.subject) == (idp.issuer, "sub-frank")
    assert identity.groups == ["gantry-approvers", "gantry-deployers", "unmapped"]
    assert identity.access_token and identity.refresh_token
    granted = [after for action, after in actions("membership.granted")]
    assert {"user": "frank", "environment": "fraud-detector/production", "role": "approver",
            "via": "gantry-approvers"} in granted  # fmt: skip
    assert len(granted) == 4
    assert [a for a, _ in actions("auth.sso_user_created", "auth.sso_signed_in",
                                  "auth.signed_in")] == [
        "auth.sso_user_created", "auth.sso_signed_in", "auth.signed_in"
    ]  # fmt: skip
    # The page works with those roles.
    assert client.get(reverse("home")).status_code == 200


def test_it_stores_the_provider_tokens_encrypted(client, idp, mapped):
    idp.set_account("sub-gina", preferred_username="gina", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-gina")
    identity = SsoIdentity.objects.get(subject="sub-gina")
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM portal_ssoidentity WHERE id = %s",
                       [identity.pk])  # fmt: skip
        stored = cursor.fetchone()
    assert identity.access_token not in stored[0]
    assert identity.refresh_token not in stored[1]
    assert stored[0].startswith("gAAAA")  # Fernet


@pytest.mark.parametrize(
    ("claims", "username"),
    [
        ({"preferred_username": "hana", "email": "hana.k@example.com"}, "hana"),
        ({"email": "ivan@example.com"}, "ivan@example.com"),
        ({}, "sub-jules"),
    ],
)
def test_it_names_the_user_after_preferred_username_else_email_else_sub(
    client, idp, catalog, claims, username
):
    idp.set_account("sub-jules", **claims)
    assert sign_in(client, idp, "sub-jules").status_code == 302
    assert User.objects.filter(username=username).exists()


def test_it_refuses_a_name_another_account_holds(client, idp, users):
    idp.set_account("sub-other-alice", preferred_username="Alice", groups=["gantry-deployers"])
    response = sign_in(client, idp, "sub-other-alice")
    assert response.status_code == 409
    text = response.content.decode()
    assert "A Gantry account named “Alice” already exists" in text
    assert "_auth_user_id" not in client.session
    assert not SsoIdentity.objects.exists()
    assert User.objects.filter(username__iexact="alice").count() == 1
    assert actions("auth.sso_refused")[-1][1] == {"reason": "user name Alice taken"}


def test_it_signs_the_same_subject_in_as_the_same_user(client, idp, mapped):
    idp.set_account("sub-kim", preferred_username="kim", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-kim")
    client.post(reverse("logout"))
    # Renamed at the provider: still the same Gantry user.
    idp.set_account("sub-kim", preferred_username="kimberly", groups=["gantry-deployers"])
    assert sign_in(client, idp, "sub-kim").status_code == 302
    assert User.objects.filter(username__in=["kim", "kimberly"]).count() == 1
    assert {role for _, role, _ in roles_of("kim")} == {"deployer"}


def test_it_refuses_a_user_disabled_in_gantry(client, idp, catalog):
    idp.set_account("sub-lee", preferred_username="lee")
    sign_in(client, idp, "sub-lee")
    client.post(reverse("logout"))
    User.objects.filter(username="lee").update(is_active=False)
    response = sign_in(client, idp, "sub-lee")
    assert response.status_code == 403
    assert "“lee” is disabled" in response.content.decode()


def test_it_follows_next_to_a_local_page_only(client, idp, catalog):
    idp.set_account("sub-mo", preferred_username="mo")
    url = client.get(reverse("sso-login") + "?next=/deployments/")["Location"]
    assert client.get(idp.authorize(url, "sub-mo"))["Location"] == "/deployments/"
    client.post(reverse("logout"))
    url = client.get(reverse("sso-login") + "?next=https://evil.example/")["Location"]
    assert client.get(idp.authorize(url, "sub-mo"))["Location"] == "/"


def test_it_keeps_hand_granted_roles(client, idp, mapped, users, catalog):
    """A role an admin granted by hand is not the sync's to take away."""
    idp.set_account("sub-nia", preferred_username="nia", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-nia")
    nia = User.objects.get(username="nia")
    production = catalog.environments.get(slug="production")
    Membership.objects.create(user=nia, environment=production, role=Role.ADMIN)
    client.post(reverse("logout"))
    idp.set_account("sub-nia", preferred_username="nia", groups=[])
    sign_in(client, idp, "sub-nia")
    assert roles_of("nia") == {("production", "admin", "")}


# -- the re-check -------------------------------------------------------------------------


def wait_past_recheck(settings) -> None:
    time.sleep(settings.OIDC_RECHECK_SECONDS + 0.2)


def test_it_changes_roles_at_the_recheck_after_the_provider_changes_groups(
    client, idp, mapped, settings
):
    settings.OIDC_RECHECK_SECONDS = 1
    idp.set_account("sub-omar", preferred_username="omar", groups=["gantry-deployers"])
    sign_in(client, idp, "sub-omar")
    refresh_before = SsoIdentity.objects.get(subject="sub-omar").refresh_token
    idp.set_account("sub-omar", preferred_username="omar", groups=["gantry-viewers"])
    # Not yet due: the roles stand.
    assert client.get(reverse("home")).status_code == 200
    assert {role for _, role, _ in roles_of("omar")} == {"deployer"}
    wait_past_recheck(settings)
    assert client.get(reverse("home")).status_code == 200
    assert roles_of("omar") == {
        (slug, "viewer", "gantry-viewers") for slug in ("dev", "staging", "production")
    }
    revoked = [after for _, after in actions("membership.revoked")]
    assert {"user": "omar", "environment": "fraud-detector/dev", "role": "deployer",
            "via": "gantry-deployers"} in [b for b in _befores("membership.revoked")]  # fmt: skip
    assert revoked == [None, None, None]
    assert actions("auth.sso_groups_changed")[-1][1] == {"groups": ["gantry-viewers"]}
    # The refresh token was used and rotated.
    identity = SsoIdentity.objects.get(subject="sub-omar")
    assert identity.refresh_token and identity.refresh_token != refresh_before


def _befores(action: str) -> list[dict]:
    return [e.before for e in AuditEvent.objects.filter(action=action).order_by("seq")]


def test_it_signs_out_a_user_disabled_at_the_provider_and_refuses_their_api_tokens(
    client, idp, mapped, settings
):
    settings.OIDC_RECHECK_SECONDS = 1
    idp.set_account("sub-pia", preferred_username="pia", groups=["gantry-deployers"])
    sign_in(client, idp, "sub-pia")
    pia = User.objects.get(username="pia")
    _, key = tokens.issue(pia, "ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/applications/").status_code == 200
    idp.set_account("sub-pia", preferred_username="pia", groups=["gantry-deployers"],
                    disabled=True)  # fmt: skip
    wait_past_recheck(settings)
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    page = client.get(reverse("login")).content.decode()
    assert "You were signed out: The identity provider no longer renews your sign-in" in page
    assert roles_of("pia") == set()
    identity = SsoIdentity.objects.get(subject="sub-pia")
    assert identity.withdrawn_at is not None
    assert identity.refresh_token == "" and identity.access_token == ""
    withdrawn = AuditEvent.objects.get(action="auth.sso_access_withdrawn")
    assert withdrawn.before == {"groups": ["gantry-deployers"]}
    assert len(actions("membership.revoked")) == 3
    # The API token stops working too, with a reason.
    response = api.get("/api/v1/applications/")
    assert response.status_code == 401
    assert "withdrew this user's access" in response.json()["detail"]
    # Back at the provider and signed in again: the token works again.
    idp.set_account("sub-pia", preferred_username="pia", groups=["gantry-deployers"])
    assert sign_in(client, idp, "sub-pia").status_code == 302
    assert api.get("/api/v1/applications/").status_code == 200


def test_it_refuses_api_tokens_of_a_user_removed_at_the_provider_without_a_browser(
    client, idp, mapped, settings
):
    settings.OIDC_RECHECK_SECONDS = 1
    idp.set_account("sub-quinn", preferred_username="quinn", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-quinn")
    _, key = tokens.issue(User.objects.get(username="quinn"), "ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    idp.delete_account("sub-quinn")
    assert api.get("/api/v1/applications/").status_code == 200  # not due yet
    wait_past_recheck(settings)
    assert api.get("/api/v1/applications/").status_code == 401
    assert SsoIdentity.objects.get(subject="sub-quinn").withdrawn_at is not None


def test_it_rechecks_through_userinfo_when_the_provider_gives_no_refresh_token(
    client, settings, oidc_provider, mapped
):
    configure(settings, oidc_provider, refresh_tokens=False, recheck=1)
    idp = oidc_provider
    idp.set_account("sub-ravi", preferred_username="ravi", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-ravi")
    assert SsoIdentity.objects.get(subject="sub-ravi").refresh_token == ""
    idp.set_account("sub-ravi", preferred_username="ravi", groups=["gantry-deployers"])
    wait_past_recheck(settings)
    assert client.get(reverse("home")).status_code == 200
    assert {role for _, role, _ in roles_of("ravi")} == {"deployer"}
    idp.delete_account("sub-ravi")
    wait_past_recheck(settings)
    assert client.get(reverse("home")).status_code == 302
    assert roles_of("ravi") == set()


def test_it_answers_api_calls_with_a_session_with_401_once_withdrawn(client, idp, mapped, settings):
    settings.OIDC_RECHECK_SECONDS = 1
    idp.set_account("sub-sam", preferred_username="sam", groups=["gantry-viewers"])
    sign_in(client, idp, "sub-sam")
    idp.delete_account("sub-sam")
    wait_past_recheck(settings)
    response = client.get("/api/v1/applications/")
    assert response.status_code == 401
    assert "signed out" in response.json()["detail"]


# -- a provider that is down --------------------------------------------------------------


def test_it_says_so_when_the_provider_cannot_be_reached(client, db, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "gantry", "secret"
    response = client.get(reverse("sso-login"))
    assert response.status_code == 503
    text = response.content.decode()
    assert "Gantry cannot reach the identity provider at" in text
    assert settings.OIDC_ISSUER in text


def test_it_refuses_a_discovery_document_of_another_issuer(client, db, settings, oidc_provider):
    configure(settings, oidc_provider)
    settings.OIDC_ISSUER = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    response = client.get(reverse("sso-login"))
    assert response.status_code == 502
    assert "names the issuer" in response.content.decode()


def test_it_says_so_when_the_provider_goes_down_during_sign_in(client, settings, catalog):
    with running_provider() as idp:
        configure(settings, idp)
        idp.set_account("sub-tao", preferred_username="tao")
        callback = idp.authorize(start(client), "sub-tao")
    response = client.get(callback)
    assert response.status_code == 503
    assert "cannot reach the identity provider" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_keeps_the_session_but_refuses_pages_while_the_provider_is_down(
    client, settings, mapped
):
    with running_provider() as idp:
        configure(settings, idp, recheck=1)
        idp.set_account("sub-uma", preferred_username="uma", groups=["gantry-viewers"])
        sign_in(client, idp, "sub-uma")
    wait_past_recheck(settings)
    response = client.get(reverse("home"))
    assert response.status_code == 503
    assert "could not confirm your access" in response.content.decode()
    assert "_auth_user_id" in client.session  # not signed out: it may come back
    assert roles_of("uma")  # nor stripped of roles: nothing is known


# -- tampering ----------------------------------------------------------------------------


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def stored_state(client) -> tuple[str, dict]:
    [(key, value)] = [(k, v) for k, v in client.session.items() if k.startswith("_state_gantry_")]
    return key, value


def tamper_state_data(client, **changes: str) -> None:
    session = client.session
    key, value = stored_state(client)
    value["data"].update(changes)
    session[key] = value
    session.save()


def test_it_refuses_a_tampered_state(client, idp, catalog):
    idp.set_account("sub-vic", preferred_username="vic")
    callback = idp.authorize(start(client), "sub-vic")
    response = client.get(with_query(callback, state="forged-state"))
    assert response.status_code == 400
    assert "state mismatch" in response.content.decode()
    assert not User.objects.filter(username="vic").exists()
    assert actions("auth.sso_refused")[-1][1] == {"reason": "state mismatch"}


def test_it_refuses_a_replayed_answer(client, idp, catalog):
    idp.set_account("sub-wes", preferred_username="wes")
    callback = idp.authorize(start(client), "sub-wes")
    assert client.get(callback).status_code == 302
    client.post(reverse("logout"))
    response = client.get(callback)
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session


def test_it_refuses_an_id_token_for_another_nonce(client, idp, catalog):
    idp.set_account("sub-xia", preferred_username="xia")
    url = start(client)
    tamper_state_data(client, nonce="not-the-nonce-sent")
    response = client.get(idp.authorize(url, "sub-xia"))
    assert response.status_code == 400
    text = response.content.decode()
    assert "ID token failed validation" in text and "nonce" in text
    assert not User.objects.filter(username="xia").exists()


def test_it_is_refused_by_the_provider_with_a_wrong_pkce_verifier(client, idp, catalog):
    idp.set_account("sub-yan", preferred_username="yan")
    url = start(client)
    tamper_state_data(client, code_verifier="x" * 64)
    response = client.get(idp.authorize(url, "sub-yan"))
    assert response.status_code == 400
    assert "invalid_grant" in response.content.decode()
    assert not User.objects.filter(username="yan").exists()


def test_it_shows_the_providers_refusal(client, idp, db):
    response = client.get(reverse("sso-callback") + "?error=access_denied&state=s")
    assert response.status_code == 403
    assert "did not sign you in: access_denied" in response.content.decode()


def test_it_refuses_a_callback_without_code(client, idp, db):
    assert client.get(reverse("sso-callback")).status_code == 400
    assert client.post(reverse("sso-callback")).status_code == 405


# -- LOCAL_LOGIN=0 ------------------------------------------------------------------------


@pytest.fixture
def no_local_login(settings, idp) -> None:
    settings.LOCAL_LOGIN = False


def test_it_refuses_passwords_except_the_break_glass_admin(client, users, no_local_login):
    response = client.post(reverse("login"), {"username": "alice",
                                               "password": "correct-horse-battery"})  # fmt: skip
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert "Password sign-in is switched off" in response.content.decode()
    User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")
    response = client.post(reverse("login"), {"username": "root",
                                               "password": "correct-horse-battery"})  # fmt: skip
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(User.objects.get(username="root").pk)


def test_it_refuses_passwords_at_the_admin_login_too(client, users, no_local_login):
    User.objects.filter(username="erin").update(is_staff=True)
    credentials = {"username": "erin", "password": "correct-horse-battery"}
    response = client.post(reverse("admin:login"), credentials)
    assert response.status_code == 200
    assert "Password sign-in is switched off" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_ends_password_sessions_opened_before_local_login_was_switched_off(
    client, users, settings
):
    client.force_login(users["alice"], backend="portal.core.backends.PasswordBackend")
    assert client.get(reverse("home")).status_code == 200
    settings.LOCAL_LOGIN = False
    assert client.get(reverse("home")).status_code == 302


def test_it_says_passwords_are_off_on_the_sign_in_page(client, db, no_local_login):
    text = client.get(reverse("login")).content.decode()
    assert "Sign in with SSO" in text
    assert "Password sign-in is switched off" in text
    assert "Break-glass administrator" in text
