"""Sign-in throttling with django-axes, the same on every path: the sign-in
page, the admin's sign-in page and API tokens.

Failures are counted in Django's cache (Redis), so every web replica sees the
same counts: per user name and, separately, per client address (the address
portal.core.middleware.client_ip finds, the one the audit trail records).
LOGIN_MAX_FAILURES failures of either lock it for LOGIN_FAILURE_WINDOW
seconds, counted again from each refused attempt; a successful sign-in clears
the user's counters. API tokens carry no user name: wrong keys count against
the address alone.
"""

from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest

# What the API token path sends as credentials with user_login_failed.
API_TOKEN = {"via": "api token"}


def username_of(request: HttpRequest, credentials: dict | None) -> str | None:
    """The user name an attempt is about, folded to lower case so that
    "Alice" and "alice" share one counter (Django's names are case-sensitive,
    but one person's guesses should not get twice the tries)."""
    if credentials is not None:
        name = credentials.get("username")
    else:
        name = request.POST.get("username") if request.method == "POST" else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip().lower()[:150]


def lockout_parameters(request: HttpRequest, credentials: dict | None) -> list[str]:
    """Count per user name and per address, each on its own; an attempt
    without a user name (an API token) per address only, so guesses without
    a name never share one counter across every client."""
    if username_of(request, credentials) is None:
        return ["ip_address"]
    return ["username", "ip_address"]


def cool_off_description() -> str:
    seconds = int(get_cool_off().total_seconds())
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{-(-seconds // 60)} minutes"


def locked_out_message() -> str:
    return f"Too many failed sign-in attempts. Try again in {cool_off_description()}."


def token_attempt_allowed(request: HttpRequest) -> bool:
    """May this client try an API token now (its address is not locked)?"""
    return AxesProxyHandler.is_allowed(request, dict(API_TOKEN))


def token_refused(request: HttpRequest) -> None:
    """Count a wrong or revoked API token against the client's address."""
    user_login_failed.send(sender=__name__, credentials=dict(API_TOKEN), request=request)


def is_locked_out(request: HttpRequest | None) -> bool:
    """Did axes refuse or lock this request (set by its handler)?"""
    return bool(getattr(request, "axes_locked_out", False))
