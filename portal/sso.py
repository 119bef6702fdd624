"""Single sign-on with OpenID Connect: sign-in, and the re-check that keeps a
signed-in user's roles in step with the identity provider.

The protocol is Authlib's (authorization code flow with PKCE S256, state and
nonce kept in the session, ID token signature and claims checked against the
provider's keys); the endpoints come from the issuer's discovery document,
fetched once per process and kept. This module decides what the answers mean
for Gantry:

- sign-in (`sso_callback`) finds the user by (issuer, subject) or creates one
  named after `preferred_username`, else `email`, else `sub`, refusing a name
  another account already has; it stores the provider's tokens encrypted on
  the user's `SsoIdentity` and syncs the roles of their groups;
- every OIDC_RECHECK_SECONDS the provider is asked again (refresh token grant,
  then userinfo), by the web middleware and by the API token authentication;
  a provider that refuses (user disabled, grant revoked) ends the session and
  stops the user's API tokens until they sign in again;
- a provider that cannot be reached gives a page saying so (502/503): a
  sign-in cannot start, and a due re-check cannot confirm anyone's access.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_safe
from joserfc.errors import JoseError
from rest_framework import exceptions

from portal.core import audit, mfa
from portal.core.api_auth import HashedTokenAuthentication
from portal.core.group_roles import sync_memberships
from portal.core.models import SsoIdentity

log = logging.getLogger(__name__)

# Session keys: when this session's user is due for a re-check (epoch seconds;
# only sessions opened through SSO have it), and where to go after sign-in.
RECHECK_AT = "gantry_sso_recheck_at"
NEXT_URL = "gantry_sso_next"
# A step-up under way: who asked, when (epoch seconds) and where to go after.
STEP_UP = "gantry_sso_step_up"
# How far the provider's clock may be behind ours when it says it authenticated the user.
STEP_UP_CLOCK_SKEW = 60


class SsoError(Exception):
    """A sign-in or re-check that cannot go on; `message` tells the user why."""

    status_code = 400
    title = "Single sign-on failed"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message  # what the audit trail records


class SignInRefused(SsoError):
    def __init__(self, message: str, *, status_code: int = 400, reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.status_code = status_code


class IdpUnavailable(SsoError):
    status_code = 503
    title = "The identity provider cannot be reached"


class IdpBadAnswer(SsoError):
    status_code = 502
    title = "The identity provider gave an answer Gantry cannot use"


class AccessWithdrawn(Exception):
    """The provider no longer vouches for the user: end the session, refuse the tokens."""


# -- the client and the provider's metadata -------------------------------------------


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


@lru_cache(maxsize=4)
def _client(issuer: str, client_id: str, secret: str, scopes: str, timeout: int) -> DjangoOAuth2App:
    # One client per configuration, kept for the life of the process: it holds
    # the discovery document and the provider's keys once fetched.
    return OAuth().register(
        "gantry",
        client_id=client_id,
        client_secret=secret,
        server_metadata_url=discovery_url(issuer),
        client_kwargs={
            "scope": scopes,
            "code_challenge_method": "S256",
            "default_timeout": timeout,
        },
    )


def oidc_client() -> DjangoOAuth2App:
    if not settings.OIDC_ISSUER:
        raise IdpUnavailable("Single sign-on is not configured (OIDC_ISSUER is not set).")
    return _client(
        settings.OIDC_ISSUER,
        settings.OIDC_CLIENT_ID,
        settings.OIDC_CLIENT_SECRET,
        settings.OIDC_SCOPES,
        settings.OIDC_TIMEOUT,
    )


def _unreachable(exc: Exception) -> SsoError:
    """The error for a failed HTTP exchange with the provider (nothing secret in it)."""
    issuer = settings.OIDC_ISSUER
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return IdpBadAnswer(
            f"The identity provider at {issuer} answered HTTP {exc.response.status_code}. "
            "Try again in a few minutes; if it persists, tell your administrator.",
            reason=f"provider answered HTTP {exc.response.status_code}",
        )
    if isinstance(exc, ValueError):  # a body that is not JSON
        return IdpBadAnswer(
            f"The identity provider at {issuer} sent an answer that is not JSON.",
            reason="provider answer is not JSON",
        )
    return IdpUnavailable(
        f"Gantry cannot reach the identity provider at {issuer} ({type(exc).__name__}). "
        "Try again in a few minutes; if it persists, tell your administrator.",
        reason=f"provider unreachable: {type(exc).__name__}",
    )


def provider_metadata(client: DjangoOAuth2App) -> dict[str, Any]:
    """The discovery document, fetched on first use and kept; checked to be the
    configured issuer's (OpenID Connect Discovery 1.0, section 4.3)."""
    try:
        metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError) as exc:
        raise _unreachable(exc) from exc
    issuer = str(metadata.get("issuer", ""))
    missing = [
        k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not metadata.get(k)
    ]
    if issuer.rstrip("/") != settings.OIDC_ISSUER.rstrip("/") or missing:
        client.server_metadata.clear()  # fetch it again next time
        problem = f"names the issuer {issuer!r}" if not missing else f"lacks {', '.join(missing)}"
        raise IdpBadAnswer(
            f"The discovery document at {discovery_url(settings.OIDC_ISSUER)} {problem}; "
            "check OIDC_ISSUER.",
            reason=f"discovery document {problem}",
        )
    return metadata


# -- claims ---------------------------------------------------------------------------


def groups_from(claims: Mapping[str, Any]) -> list[str]:
    """The user's groups from OIDC_GROUPS_CLAIM: a list of names or one name;
    a dotted name (realm_access.roles) reaches into an object when no claim
    has that exact name (namespaced claims are URLs, full of dots)."""
    name = settings.OIDC_GROUPS_CLAIM
    value: Any = claims.get(name)
    if name not in claims and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({item for item in value if isinstance(item, str) and item})


def username_from(claims: Mapping[str, Any]) -> str:
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _userinfo(client: DjangoOAuth2App, metadata: dict, access_token: str) -> dict | None:
    """The userinfo answer, or None when the provider has no such endpoint.
    Raises requests.HTTPError when the provider refuses the token."""
    if not metadata.get("userinfo_endpoint"):
        return None
    try:
        return dict(client.userinfo(token={"access_token": access_token, "token_type": "Bearer"}))
    except requests.HTTPError:
        raise
    except (requests.RequestException, ValueError) as exc:
        raise _unreachable(exc) from exc


# -- sign-in --------------------------------------------------------------------------


def _safe_next(request: HttpRequest, url: str) -> str:
    allowed = url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return url if url and allowed else ""


@require_safe
def sso_start(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider's authorization endpoint."""
    try:
        client = oidc_client()
        provider_metadata(client)
        callback = request.build_absolute_uri(reverse("sso-callback"))
        response = client.authorize_redirect(request, callback)
    except SsoError as exc:
        return error_page(request, exc)
    except (requests.RequestException, ValueError) as exc:
        return error_page(request, _unreachable(exc))
    request.session[NEXT_URL] = _safe_next(request, request.GET.get("next", ""))
    return response


@require_safe
def sso_step_up(request: HttpRequest) -> HttpResponse:
    """Send a signed-in SSO user back to the provider to authenticate again
    (prompt=login, max_age=0), for an approval that needs a fresh MFA. The
    answer comes to sso_callback, which takes the ID token's amr/acr as proof."""
    if not request.user.is_authenticated:
        return redirect(f"{reverse(settings.LOGIN_URL)}?next={request.get_full_path()}")
    next_url = _safe_next(request, request.GET.get("next", "")) or settings.LOGIN_REDIRECT_URL
    if not SsoIdentity.objects.filter(user=request.user).exists():
        return redirect(f"{reverse('mfa-verify')}?{urlencode({'next': next_url})}")
    params = {"prompt": "login", "max_age": 0}
    if settings.OIDC_STEP_UP_ACR:
        params["acr_values"] = settings.OIDC_STEP_UP_ACR
    try:
        client = oidc_client()
        provider_metadata(client)
        callback = request.build_absolute_uri(reverse("sso-callback"))
        response = client.authorize_redirect(request, callback, **params)
    except SsoError as exc:
        return error_page(request, exc)
    except (requests.RequestException, ValueError) as exc:
        return error_page(request, _unreachable(exc))
    request.session[STEP_UP] = {"user": request.user.pk, "started": time.time(),
                                "next": next_url}  # fmt: skip
    return response


@require_safe
def sso_callback(request: HttpRequest) -> HttpResponse:
    """The provider's answer: check it, find or create the user, sign them in
    (or, after sso_step_up, confirm the signed-in user authenticated again)."""
    step_up = request.session.pop(STEP_UP, None)
    if isinstance(step_up, dict) and request.user.is_authenticated:
        return _finish_step_up(request, step_up)
    try:
        user, identity, authentication = _sign_in(request)
    except SsoError as exc:
        audit.record("auth.sso_refused", ("auth.user", "", ""), actor_name="anonymous",
                     after={"reason": exc.reason})  # fmt: skip
        return error_page(request, exc)
    next_url = request.session.pop(NEXT_URL, "")
    login(request, user, backend="portal.core.backends.SsoBackend")  # audited as auth.signed_in
    request.session[RECHECK_AT] = identity.checked_at.timestamp() + settings.OIDC_RECHECK_SECONDS
    mfa.remember(request.session, authentication)
    return redirect(next_url or settings.LOGIN_REDIRECT_URL)


def authentication_from(claims: Mapping[str, Any]) -> mfa.Authentication:
    """What an ID token says of how the user authenticated: `sso_mfa` when its
    `amr` names a factor of OIDC_MFA_AMR or its `acr` is one of OIDC_MFA_ACR,
    `sso` otherwise; at `auth_time` (the moment the provider checked them)."""
    amr = claims.get("amr")
    amr = [str(value) for value in amr] if isinstance(amr, list) else []
    acr = str(claims.get("acr") or "")
    auth_time = claims.get("auth_time")
    at = (
        datetime.fromtimestamp(auth_time, tz=UTC)
        if isinstance(auth_time, int | float)
        else timezone.now()
    )
    strong = bool(set(amr) & set(settings.OIDC_MFA_AMR)) or (acr and acr in settings.OIDC_MFA_ACR)
    detail = {"amr": amr, "acr": acr, "auth_time": auth_time}
    return mfa.Authentication("sso_mfa" if strong else "sso", at, detail)


def _finish_step_up(request: HttpRequest, step_up: dict) -> HttpResponse:
    user = request.user
    try:
        if step_up.get("user") != user.pk:
            raise SignInRefused("This confirmation was started by another user. Start again.")
        client = oidc_client()
        metadata = provider_metadata(client)
        token = _exchange_code(request, client)
        claims = dict(token["userinfo"])
        identity = SsoIdentity.objects.filter(user=user).first()
        if identity is None or (identity.issuer, identity.subject) != (
            metadata["issuer"],
            str(claims.get("sub")),
        ):
            raise SignInRefused(
                "The identity provider confirmed another account than the one signed in "
                "here. Sign out, then sign in again as yourself.",
                status_code=403, reason="step-up for another subject",
            )  # fmt: skip
        authentication = authentication_from(claims)
        started = float(step_up.get("started") or 0)
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or auth_time < started - STEP_UP_CLOCK_SKEW:
            raise SignInRefused(
                "The identity provider did not authenticate you again (its answer has no "
                "auth_time, or an old one), so this cannot count as a fresh sign-in.",
                status_code=403, reason="step-up without a fresh auth_time",
            )  # fmt: skip
        if not authentication.strong:
            amr = ", ".join(authentication.detail["amr"]) or "none"
            raise SignInRefused(
                "Your identity provider confirmed who you are but named no second factor "
                f"(amr: {amr}; acr: {authentication.detail['acr'] or 'none'}). This approval "
                "needs MFA: set up a second factor at your identity provider, or ask its "
                "administrators to send amr/acr (Gantry accepts amr "
                f"{', '.join(settings.OIDC_MFA_AMR)}"
                + (f" or acr {', '.join(settings.OIDC_MFA_ACR)}" if settings.OIDC_MFA_ACR else "")
                + ").",
                status_code=403, reason=f"step-up without MFA (amr {amr})",
            )  # fmt: skip
    except SsoError as exc:
        audit.record("auth.sso_step_up_refused", ("auth.user", user.pk, user.get_username()),
                     actor=user, after={"reason": exc.reason})  # fmt: skip
        return error_page(request, exc)
    with transaction.atomic():
        identity.keep_tokens(token)
        identity.save()
        audit.record("auth.sso_step_up", ("auth.user", user.pk, user.get_username()), actor=user,
                     after={"amr": authentication.detail["amr"],
                            "acr": authentication.detail["acr"],
                            "auth_time": authentication.detail["auth_time"]})  # fmt: skip
    mfa.remember(request.session, authentication)
    messages.success(request, "Identity confirmed with your identity provider.")
    return redirect(step_up.get("next") or settings.LOGIN_REDIRECT_URL)


def _exchange_code(request: HttpRequest, client: DjangoOAuth2App) -> dict:
    """The token endpoint's answer to the authorization code, its ID token checked."""
    if request.GET.get("error"):
        error = request.GET.get("error_description") or request.GET["error"]
        raise SignInRefused(
            f"The identity provider did not sign you in: {error[:200]}.",
            status_code=403,
            reason=f"provider error: {request.GET['error'][:64]}",
        )
    if not request.GET.get("code") or not request.GET.get("state"):
        raise SignInRefused(
            "This sign-in answer has no code or state. Start again from the sign-in page.",
            reason="callback without code or state",
        )
    try:
        token = client.authorize_access_token(request)
    except MismatchingStateError:
        raise SignInRefused(
            "This sign-in answer does not belong to a sign-in started in this browser, "
            "or was already used (state mismatch). Start again from the sign-in page.",
            reason="state mismatch",
        ) from None
    except OAuthError as exc:
        raise SignInRefused(
            "The identity provider refused to complete the sign-in "
            f"({exc.error}: {exc.description or 'no detail'}). Start again from the sign-in page.",
            reason=f"token endpoint refused: {exc.error}",
        ) from None
    except JoseError as exc:
        raise SignInRefused(
            "The identity provider's ID token failed validation "
            f"({type(exc).__name__}: {exc}). Start again from the sign-in page.",
            reason=f"ID token invalid: {type(exc).__name__} {exc}"[:200],
        ) from None
    except (requests.RequestException, ValueError) as exc:
        raise _unreachable(exc) from exc
    if not isinstance(token.get("userinfo"), Mapping):
        raise SignInRefused(
            "The identity provider sent no ID token: is the client set up for OpenID Connect?",
            reason="no ID token",
        )
    return token


def _sign_in(request: HttpRequest) -> tuple[User, SsoIdentity, mfa.Authentication]:
    client = oidc_client()
    metadata = provider_metadata(client)
    token = _exchange_code(request, client)
    claims = dict(token["userinfo"])
    try:
        info = _userinfo(client, metadata, token["access_token"])
    except requests.HTTPError as exc:
        raise _unreachable(exc) from exc
    if info is not None:
        if info.get("sub") != claims.get("sub"):
            raise SignInRefused("The userinfo answer is about another user.", reason="sub mismatch")
        claims.update(info)
    authentication = authentication_from(token["userinfo"])
    try:
        with transaction.atomic():
            return (*_link_user(metadata["issuer"], claims, token), authentication)
    except IntegrityError:
        # Two first sign-ins of one account at once: the other one won.
        raise SignInRefused(
            "Another sign-in of this account was finishing at the same time. Try again.",
            status_code=409,
            reason="concurrent first sign-in",
        ) from None


def _link_user(issuer: str, claims: dict, token: dict) -> tuple[User, SsoIdentity]:
    subject = str(claims["sub"])
    groups = groups_from(claims)
    identity = (
        SsoIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is None:
        user = _create_user(issuer, subject, claims)
        identity = SsoIdentity(user=user, issuer=issuer, subject=subject)
    user = identity.user
    if not user.is_active:
        raise SignInRefused(
            f"The Gantry account “{user.get_username()}” is disabled. Ask an administrator.",
            status_code=403,
            reason=f"account {user.get_username()} disabled",
        )
    before = list(identity.groups or [])
    identity.groups = groups
    identity.keep_tokens(token)
    identity.signed_in_at = identity.checked_at = timezone.now()
    identity.withdrawn_at, identity.withdrawn_reason = None, ""
    identity.save()
    sync_memberships(user, groups)
    audit.record(
        "auth.sso_signed_in",
        ("auth.user", user.pk, user.get_username()),
        actor=user,
        before={"groups": before},
        after={"groups": groups, "subject": subject},
    )
    return user, identity


def _create_user(issuer: str, subject: str, claims: dict) -> User:
    username = username_from(claims)
    try:
        User.username_validator(username)
        if not username or len(username) > 150:
            raise ValidationError("length")
    except ValidationError:
        raise SignInRefused(
            f"The identity provider's user name “{username[:160]}” cannot be a Gantry user "
            "name (150 characters at most: letters, digits and @ . + - _).",
            reason="unusable user name",
        ) from None
    if User.objects.filter(username__iexact=username).exists():
        raise SignInRefused(
            f"A Gantry account named “{username}” already exists and is not linked to your "
            "identity at the identity provider, so it was not taken over. Ask a Gantry "
            "administrator to rename or remove that account.",
            status_code=409,
            reason=f"user name {username} taken",
        )
    email = claims.get("email") if isinstance(claims.get("email"), str) else ""
    user = User.objects.create_user(username, email=email)  # no usable password
    audit.record("auth.sso_user_created", ("auth.user", user.pk, username), actor=user,
                 after={"username": username, "issuer": issuer, "subject": subject})  # fmt: skip
    return user


def error_page(request: HttpRequest, exc: SsoError) -> HttpResponse:
    if isinstance(exc, IdpUnavailable | IdpBadAnswer):
        log.warning("single sign-on: %s", exc.reason)
    context = {
        "title": exc.title,
        "message": exc.message,
        "request_id": getattr(request, "id", ""),
        "local_login": settings.LOCAL_LOGIN,
    }
    return render(request, "registration/sso_error.html", context, status=exc.status_code)


# -- the re-check ---------------------------------------------------------------------


class _Refused(Exception):
    """The provider refused to vouch for the user any longer."""


def confirm_access(user_id: int) -> float | None:
    """Confirm the user with the provider if their last check is older than
    OIDC_RECHECK_SECONDS. Returns when the next check is due (epoch seconds),
    or None for a user who never signed in through SSO.

    Raises AccessWithdrawn when the provider refuses (now or at an earlier
    check), IdpUnavailable/IdpBadAnswer when it cannot say.
    """
    state = (
        SsoIdentity.objects.filter(user_id=user_id)
        .values_list("checked_at", "withdrawn_at", "withdrawn_reason")
        .first()
    )
    if state is None:
        return None
    checked_at, withdrawn_at, reason = state
    if withdrawn_at is not None:
        raise AccessWithdrawn(reason)
    interval = settings.OIDC_RECHECK_SECONDS
    if (timezone.now() - checked_at).total_seconds() < interval:
        return checked_at.timestamp() + interval
    return _recheck(user_id)


def _recheck(user_id: int) -> float:
    withdrawn = ""
    unconfirmed: SsoError | None = None
    with transaction.atomic():
        # The row lock makes concurrent requests of one user check once: the
        # provider rotates refresh tokens and revokes the grant when an old one
        # is used twice.
        identity = (
            SsoIdentity.objects.select_for_update().select_related("user").get(user_id=user_id)
        )
        interval = settings.OIDC_RECHECK_SECONDS
        if identity.withdrawn_at is not None:
            withdrawn = identity.withdrawn_reason
        elif (timezone.now() - identity.checked_at).total_seconds() < interval:
            return identity.checked_at.timestamp() + interval
        else:
            try:
                claims = _current_claims(identity)
            except _Refused as exc:
                withdrawn = str(exc)
                _withdraw(identity, withdrawn)
            except SsoError as exc:
                # A refresh may have succeeded before the provider failed: the
                # old refresh token is spent, keep the new one.
                identity.save(update_fields=["access_token", "access_token_expires_at",
                                             "refresh_token"])  # fmt: skip
                unconfirmed = exc
            else:
                _take_groups(identity, claims)
    if withdrawn:
        raise AccessWithdrawn(withdrawn)
    if unconfirmed is not None:
        raise unconfirmed
    return identity.checked_at.timestamp() + interval


def _current_claims(identity: SsoIdentity) -> dict | None:
    """The user's claims now, asked of the provider (tokens updated on
    `identity`, not saved); None when the provider answered without any."""
    client = oidc_client()
    metadata = provider_metadata(client)
    if metadata["issuer"] != identity.issuer:
        raise _Refused("Gantry now trusts another identity provider; sign in again.")
    claims: dict = {}
    access_token = identity.access_token
    if identity.refresh_token:
        try:
            token = client.fetch_access_token(
                grant_type="refresh_token", refresh_token=identity.refresh_token
            )
        except OAuthError as exc:
            if exc.error in {"invalid_grant", "unauthorized_client"}:
                raise _Refused(
                    "The identity provider no longer renews your sign-in "
                    f"({exc.description or exc.error})."[:200]
                ) from None
            raise IdpBadAnswer(
                f"The identity provider refused to renew the sign-in ({exc.error}).",
                reason=f"refresh refused: {exc.error}",
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise _unreachable(exc) from exc
        identity.keep_tokens(token)
        access_token = identity.access_token
        if token.get("id_token"):
            try:
                claims.update(client.parse_id_token(token, nonce=None))
            except JoseError as exc:
                raise IdpBadAnswer(
                    f"The renewed ID token failed validation ({type(exc).__name__}).",
                    reason=f"renewed ID token invalid: {type(exc).__name__}",
                ) from None
            except (requests.RequestException, ValueError) as exc:
                raise _unreachable(exc) from exc
    elif not access_token:
        raise _Refused("There is no token to confirm your sign-in with.")
    try:
        info = _userinfo(client, metadata, access_token)
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code in {401, 403}:
            raise _Refused("The identity provider no longer accepts your sign-in.") from None
        raise _unreachable(exc) from exc
    if info is not None:
        claims.update(info)
    if not claims:
        return None
    if str(claims.get("sub")) != identity.subject:
        raise _Refused("The identity provider answered for another user.")
    return claims


def _take_groups(identity: SsoIdentity, claims: dict | None) -> None:
    """Store a successful check and sync the roles of the groups it found."""
    before = list(identity.groups or [])
    if claims is not None:  # no claims at all: the groups are what they were
        identity.groups = groups_from(claims)
    identity.checked_at = timezone.now()
    identity.save()
    if identity.groups != before:
        audit.record("auth.sso_groups_changed",
                     ("auth.user", identity.user_id, identity.user.get_username()),
                     actor=identity.user, before={"groups": before},
                     after={"groups": identity.groups})  # fmt: skip
    sync_memberships(identity.user, identity.groups)


def _withdraw(identity: SsoIdentity, reason: str) -> None:
    """The provider stopped vouching for the user: forget their tokens and
    group roles; sessions end and API tokens fail until the next sign-in."""
    identity.withdrawn_at = identity.checked_at = timezone.now()
    identity.withdrawn_reason = reason[:200]
    identity.access_token = identity.refresh_token = ""
    identity.access_token_expires_at = None
    before = list(identity.groups or [])
    identity.groups = []
    identity.save()
    user = identity.user
    audit.record("auth.sso_access_withdrawn", ("auth.user", user.pk, user.get_username()),
                 actor=user, before={"groups": before}, after={"reason": reason})  # fmt: skip
    sync_memberships(user, [])


class SsoRecheckMiddleware:
    """Re-check sessions opened through SSO once OIDC_RECHECK_SECONDS have
    passed: a refusal signs the user out, an unreachable provider gives a 503
    page (the session stays, and the next request tries again)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        due = request.session.get(RECHECK_AT)
        if due is not None and time.time() >= due and request.user.is_authenticated:
            try:
                next_at = confirm_access(request.user.pk)
            except AccessWithdrawn as exc:
                return self._sign_out(request, str(exc))
            except SsoError as exc:
                return self._unconfirmed(request, exc)
            if next_at is None:
                request.session.pop(RECHECK_AT, None)
            else:
                request.session[RECHECK_AT] = next_at
        return self.get_response(request)

    @staticmethod
    def _sign_out(request: HttpRequest, reason: str) -> HttpResponse:
        logout(request)
        message = f"You were signed out: {reason} Sign in again to continue."
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=401)
        messages.error(request, message)
        login_url = reverse(settings.LOGIN_URL)
        if getattr(request, "htmx", False):
            response = HttpResponse(status=200)
            response["HX-Redirect"] = login_url
            return response
        return redirect(login_url)

    @staticmethod
    def _unconfirmed(request: HttpRequest, exc: SsoError) -> HttpResponse:
        message = f"Gantry could not confirm your access with the identity provider. {exc.message}"
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=exc.status_code)
        return error_page(request, type(exc)(message, reason=exc.reason))


class ServiceUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The identity provider cannot be reached."
    default_code = "identity_provider_unavailable"


class SsoCheckedTokenAuthentication(HashedTokenAuthentication):
    """API tokens of a user who signs in through SSO are good only while the
    provider vouches for the user: re-checked like a session, refused once the
    provider refuses, until the user signs in again."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        try:
            confirm_access(user.pk)
        except AccessWithdrawn as exc:
            raise exceptions.AuthenticationFailed(
                f"The identity provider withdrew this user's access ({exc}). "
                "Sign in to Gantry through SSO again to use API tokens."
            ) from None
        except SsoError as exc:
            error = ServiceUnavailable(
                f"Cannot confirm this user's access with the identity provider: {exc.message}"
            )
            error.status_code = exc.status_code
            raise error from None
        return user, token


# -- authentication backends ----------------------------------------------------------
