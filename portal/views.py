"""Sign-in (throttled), sign-out, API tokens, health probes and the error pages."""

from __future__ import annotations

import hashlib
import logging
import math
import time

import redis
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template import loader
from django.urls import Resolver404, resolve
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from portal import api_errors
from portal.core import audit
from portal.core import tokens as api_tokens
from portal.core.middleware import client_ip
from portal.core.models import ApiToken
from portal.forms import SignInForm, TokenForm

log = logging.getLogger(__name__)


# -- sign-in throttling ----------------------------------------------------------
#
# Counters live in the shared cache (Redis) so that every web replica sees the
# same count. Each counter has a companion "since" key holding when its window
# started; both expire together at the end of the window.


def throttle_keys(username: str, ip: str | None) -> list[str]:
    """Cache keys counting failures for this username and this client IP."""
    # Hashed: usernames may hold characters a cache key should not.
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [f"signin-failures:user:{name}", f"signin-failures:ip:{ip or 'unknown'}"]


def _seconds_locked(keys: list[str]) -> int:
    """Seconds until the caller may try again; 0 when not locked."""
    values = cache.get_many([*keys, *(f"{key}:since" for key in keys)])
    wait = 0.0
    for key in keys:
        if int(values.get(key) or 0) >= settings.LOGIN_MAX_FAILURES:
            since = float(values.get(f"{key}:since") or time.time())
            wait = max(wait, since + settings.LOGIN_FAILURE_WINDOW - time.time(), 1)
    return math.ceil(wait)


def _count_failure(keys: list[str]) -> None:
    window = settings.LOGIN_FAILURE_WINDOW
    for key in keys:
        # add() only writes when absent, so the first failure starts the window.
        cache.add(f"{key}:since", time.time(), timeout=window)
        if cache.add(key, 1, timeout=window):
            continue
        try:
            cache.incr(key)  # INCR keeps the key's expiry
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=window)


def _describe_wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


class SignInView(LoginView):
    """Django's sign-in, refused for a while after too many failures per
    username or per client IP (even when the password is right)."""

    form_class = SignInForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["sso_enabled"] = bool(settings.OIDC_ISSUER)
        context["local_login"] = settings.LOCAL_LOGIN
        return context

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        username = request.POST.get("username", "")[:150]
        keys = throttle_keys(username, client_ip(request))
        wait = _seconds_locked(keys)
        if wait:
            audit.record(
                "auth.sign_in_throttled",
                ("auth.user", "", username),
                actor_name=username or "anonymous",
            )
            form = self.get_form()
            form.errors.clear()
            form.add_error(
                None,
                f"Too many failed sign-in attempts. Try again in {_describe_wait(wait)}.",
            )
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:  # the form was re-shown: the credentials failed
            _count_failure(keys)
        else:
            cache.delete_many([keys[0], f"{keys[0]}:since"])
        return response


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
    """handler500: a plain page with the request id, so a user can quote it to us."""
    request_id = api_errors.request_id_of(request)
    log.error("server error, request id %s", request_id)
    if api_errors.is_api(request):
        return api_errors.json_error(request, 500, api_errors.SERVER_ERROR)
    body = loader.get_template("500.html").render({"request_id": request_id})
    return HttpResponse(body, status=500)
