"""Two-factor authentication pages of local accounts: set up an authenticator
(the QR code is drawn here), the second step of signing in, the step-up an
environment's fresh-MFA rule asks for before an approval, recovery codes."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from portal.core import mfa, totp
from portal.core.models import SsoIdentity
from portal.forms import EnrolmentForm, SecondFactorForm

# The sign-in waiting for its second step: who passed the password check and
# when (the session holds it for PENDING_SECONDS, then the password is asked again).
PENDING = "gantry_mfa_pending"
PENDING_SECONDS = 300


def safe_next(request: HttpRequest, default: str = "") -> str:
    url = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return url if url and allowed else (default or settings.LOGIN_REDIRECT_URL)


def begin_second_step(request: HttpRequest, user, next_url: str) -> HttpResponse:
    """The password was right and the account has an authenticator: ask for a code."""
    request.session[PENDING] = {"user": user.pk, "backend": user.backend, "at": time.time(),
                                "next": next_url}  # fmt: skip
    return redirect(reverse("mfa-verify"))


def _pending_user(request: HttpRequest):
    pending = request.session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        return None, None
    user = get_user_model().objects.filter(pk=pending.get("user"), is_active=True).first()
    return user, pending


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """A code from the authenticator (or a recovery code): the second step of
    a sign-in, or a signed-in user confirming it is still them (step-up)."""
    if request.user.is_authenticated:
        user, pending = request.user, None
        if not totp.has_totp(user):
            # No authenticator here: an SSO user proves it at the identity provider.
            target = (
                "sso-step-up" if SsoIdentity.objects.filter(user=user).exists() else "mfa-setup"
            )
            return redirect(f"{reverse(target)}?{urlencode({'next': safe_next(request)})}")
    else:
        user, pending = _pending_user(request)
        if user is None:
            request.session.pop(PENDING, None)
            messages.info(request, "Sign in with your password first.")
            return redirect(settings.LOGIN_URL)
    form = SecondFactorForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        wait = totp.seconds_locked(user)
        method = None if wait else totp.verify(user, form.cleaned_data["code"])
        if method is not None:
            if pending is not None:
                request.session.pop(PENDING, None)
                login(request, user, backend=pending["backend"])  # audited as auth.signed_in
                next_url = pending.get("next") or settings.LOGIN_REDIRECT_URL
            else:
                next_url = safe_next(request)
            mfa.remember(request.session, mfa.Authentication(method, timezone.now()))
            if method == "recovery_code":
                left = totp.remaining_recovery_codes(user)
                messages.warning(
                    request,
                    f"Recovery code used: {left} left. Issue new ones on the two-factor page "
                    "if you are running out.",
                )
            return redirect(next_url)
        wait = wait or totp.seconds_locked(user)
        form.add_error("code", "That code is not right (or was already used)."
                       + (f" Wait {wait} s before the next try." if wait else ""))  # fmt: skip
        status = 400
    context = {"form": form, "step_up": pending is None, "next": safe_next(request, "")}
    return render(request, "registration/mfa_verify.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator: scan the QR code (or type the secret), confirm
    with a first code, get the recovery codes once."""
    user = request.user
    device = totp.device_of(user)
    if device is not None:  # already enrolled: status and recovery codes
        context = {"device": device, "remaining": totp.remaining_recovery_codes(user),
                   "form": SecondFactorForm(), "next": safe_next(request, "")}  # fmt: skip
        return render(request, "registration/mfa_setup.html", context)
    form = EnrolmentForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        codes = totp.confirm_enrolment(user, form.cleaned_data["code"])
        if codes is not None:
            mfa.remember(request.session, mfa.Authentication("totp", timezone.now()))
            return _show_recovery_codes(request, codes, safe_next(request, ""))
        form.add_error("code", "That code does not match: check the app's clock and try the "
                       "code it shows now.")  # fmt: skip
        status = 400
    pending = totp.device_of(user, confirmed=False)
    if pending is None or request.method == "GET":
        pending = totp.start_enrolment(user)
    context = {"form": form, "qr_svg": totp.qr_svg(pending), "secret": totp.secret_base32(pending),
               "next": safe_next(request, "")}  # fmt: skip
    response = render(request, "registration/mfa_setup.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the secret is on this page
    return response


@login_required
@require_POST
def new_recovery_codes(request: HttpRequest) -> HttpResponse:
    """Replace the recovery codes, after a current code proves it is the owner."""
    form = SecondFactorForm(request.POST)
    if not form.is_valid() or totp.verify(request.user, form.cleaned_data["code"]) is None:
        messages.error(request, "That code is not right: no new recovery codes were issued.")
        return redirect("mfa-setup")
    mfa.remember(request.session, mfa.Authentication("totp", timezone.now()))
    return _show_recovery_codes(request, totp.issue_recovery_codes(request.user), "")


def _show_recovery_codes(request: HttpRequest, codes: list[str], next_url: str) -> HttpResponse:
    response = render(request, "registration/mfa_recovery_codes.html",
                      {"codes": codes, "next": next_url}, status=201)  # fmt: skip
    response["Cache-Control"] = "no-store"
    return response
