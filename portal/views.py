"""Sign-in, the lock-out page, sign-out, API tokens, health probes and the error pages."""

from __future__ import annotations

import logging
import sys

import redis
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template import loader
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from portal import api_errors, mfa_views
from portal.core import mfa, throttle, totp
from portal.core import tokens as api_tokens
from portal.core.admin import AdminSignInForm
from portal.core.middleware import unavailable_message, unavailable_response
from portal.core.models import ApiToken
from portal.forms import SignInForm, TokenForm

log = logging.getLogger(__name__)


# -- sign-in ---------------------------------------------------------------------


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """What django-axes answers while a user name or address is locked out
    (AXES_LOCKOUT_CALLABLE): JSON under /api/, the sign-in page's message elsewhere."""
    message = throttle.locked_out_message()
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        context = {"message": message, "admin": request.path.startswith("/admin/")}
        response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(int(get_cool_off().total_seconds()))
    return response


class SignInView(LoginView):
    """Django's sign-in; django-axes (first in AUTHENTICATION_BACKENDS) refuses
    it while the user name or the client address is locked out."""

    form_class = SignInForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["sso_enabled"] = bool(settings.OIDC_ISSUER)
        context["local_login"] = settings.LOCAL_LOGIN
        return context

    def form_valid(self, form) -> HttpResponse:
        """The password is right: sign in, or first ask for the second factor
        when the account has an authenticator (portal/mfa_views.py)."""
        user = form.get_user()
        if totp.has_totp(user):
            return mfa_views.begin_second_step(self.request, user, self.get_success_url())
        response = super().form_valid(form)
        mfa.remember(self.request.session, mfa.Authentication("password", timezone.now()))
        return response


class AdminSignInView(SignInView):
    """The admin's sign-in page, through the same throttle and second factor."""

    template_name = "admin/login.html"
    authentication_form = AdminSignInForm
    form_class = AdminSignInForm

    def get_default_redirect_url(self) -> str:
        return reverse("admin:index")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(admin.site.each_context(self.request), title="Log in",
                       app_path=self.request.get_full_path())  # fmt: skip
        return context


def admin_sign_in(request: HttpRequest, extra_context=None) -> HttpResponse:
    """Stands in for AdminSite.login (see urls.py)."""
    if request.method == "GET" and request.user.is_authenticated and request.user.is_staff:
        return redirect(reverse("admin:index"))
    return AdminSignInView.as_view()(request)


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    logout(request)  # sends user_logged_out, which audits it
    messages.info(request, "You are signed out.")
    return redirect(settings.LOGOUT_REDIRECT_URL)


# -- API tokens ------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's tokens and issue a new one; the key is shown on this response only."""
    form = TokenForm(request.POST or None)
    new_key = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            token, new_key = api_tokens.issue(request.user, form.cleaned_data["name"])
            messages.success(request, f"Token “{token.name}” issued.")
            form = TokenForm()
            status = 201
        else:
            status = 400
    context = {
        "form": form,
        "new_key": new_key,
        "tokens": ApiToken.objects.filter(user=request.user),
        "api_url": request.build_absolute_uri(reverse("api-application-list")),
    }
    response = render(request, "portal/tokens.html", context, status=status)
    if new_key:
        # The clear key is in this page: keep it out of every cache.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    # Another user's token is a 404: its existence is not ours to reveal.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if api_tokens.revoke(token):
        messages.success(request, f"Token “{token.name}” revoked.")
    else:
        messages.info(request, f"Token “{token.name}” was already revoked.")
    return redirect("tokens")


# -- health ----------------------------------------------------------------------


@require_safe
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers; nothing else is checked (restart only if this fails)."""
    return JsonResponse({"status": "ok"})


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # any failure means "not ready"; the detail goes to the log
        log.warning("readiness: database check failed", exc_info=True)
        return False


def _redis_answers() -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except Exception as exc:  # never echo the URL: it may carry a password
        log.warning("readiness: redis check failed: %s", type(exc).__name__)
        return False
    finally:
        client.close()


@require_safe
def health_ready(request: HttpRequest) -> JsonResponse:
    """Ready to serve: PostgreSQL and Redis both answer. 503 names what failed."""
    checks = {
        "database": "ok" if _database_answers() else "unavailable",
        "redis": "ok" if _redis_answers() else "unavailable",
    }
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        body = {"status": "unavailable", "failed": failed, "checks": checks}
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


# -- errors ----------------------------------------------------------------------
#
# Under /api/ every error is JSON (portal.api_errors); elsewhere, the pages.


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400."""
    if api_errors.is_api(request):
        return api_errors.json_error(request, 400, "Bad request.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler403: the page (403.html) says why."""
    if api_errors.is_api(request):
        detail = str(exception) or "You may not do this."
        return api_errors.json_error(request, 403, detail)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an unknown API URL is JSON too, so a client can tell it from a network error."""
    if api_errors.is_api(request):
        return api_errors.json_error(request, 404, f"No API endpoint at {request.path}.")
    return defaults.page_not_found(request, exception)


@csrf_exempt  # nothing here to protect; a POST to a wrong URL should learn it is wrong
def api_endpoint_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """The last /api/v1/ pattern: an unknown API URL is a JSON 404 even with DEBUG on
    (where Django would answer its HTML debug page)."""
    detail = f"No API endpoint at {request.path}."
    if not request.path.endswith("/"):
        try:
            if resolve(request.path + "/").url_name != "api-not-found":
                detail += f" Did you mean {request.path}/ ?"
        except Resolver404:
            pass
    return api_errors.json_error(request, 404, detail)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW."""
    if api_errors.is_api(request):
        detail = f"CSRF check failed: {reason}. Send the X-CSRFToken header, or use an API token."
        return api_errors.json_error(request, 403, detail)
    return csrf.csrf_failure(request, reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a plain page with the request id, so a user can quote it to us;
    a 503 naming the service when Redis or the database was not there (an
    outage met in a middleware, e.g. reading the session, lands here)."""
    if message := unavailable_message(sys.exc_info()[1]):  # Django calls this while handling it
        return unavailable_response(request, message)
    request_id = api_errors.request_id_of(request)
    log.error("server error, request id %s", request_id)
    if api_errors.is_api(request):
        return api_errors.json_error(request, 500, api_errors.SERVER_ERROR)
    body = loader.get_template("500.html").render({"request_id": request_id})
    return HttpResponse(body, status=500)
