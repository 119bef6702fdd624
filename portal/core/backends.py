"""Who may sign in with a password: Django's check, narrowed by LOCAL_LOGIN.

With LOCAL_LOGIN=0 the company IdP is the way in (portal/sso.py); the
password form lets in superusers only, the break-glass administrator, on the
sign-in page and the admin's alike.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db.models import QuerySet

from portal.core.prepared import prepared

LOCAL_LOGIN_OFF = (
    "Password sign-in is switched off: use “Sign in with SSO”. Only the break-glass "
    "administrator signs in with a password here."
)


class ThrottleBackend(AxesStandaloneBackend):
    """django-axes's lock-out check, first in AUTHENTICATION_BACKENDS: refuses
    every attempt while the user name or the client address is locked out
    (portal/core/throttle.py). Every sign-in path passes the request; a call
    without one (the test client, a shell) has no address to count and is
    left to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


@prepared(pk=int)
def _user_row(pk: int) -> QuerySet:
    return get_user_model()._default_manager.filter(pk=pk)


class _SessionUser(ModelBackend):
    """Reads the signed-in user of every request by a prepared query
    (portal/core/prepared.py): the same row Django's get() reads, from SQL
    compiled once per process."""

    def get_user(self, user_id):
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            return super().get_user(user_id)  # Django's lookup converts the value, or fails
        user = _user_row.first(pk=user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


class PasswordBackend(_SessionUser):
    """Django's password check; with LOCAL_LOGIN=0 it lets in superusers only
    (the break-glass administrator), on the sign-in page and the admin's alike."""

    def user_can_authenticate(self, user) -> bool:
        return super().user_can_authenticate(user) and (settings.LOCAL_LOGIN or user.is_superuser)


class SsoBackend(_SessionUser):
    """Names the sessions `sso_callback` opens; it never checks a password."""

    def authenticate(self, request, **credentials) -> None:
        return None
