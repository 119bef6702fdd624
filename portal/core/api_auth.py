"""API authentication by per-user token, stored hashed (portal.core.models.ApiToken).

Both `Authorization: Bearer <key>` (what CI tools send) and `Token <key>`
are accepted. Wrong or revoked keys count against the client's address in
the sign-in throttle (portal/core/throttle.py); a locked-out address gets 429
for every key, right or wrong, until the window passes.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.core import throttle
from portal.core.models import ApiToken
from portal.core.tokens import hash_token

SCHEMES = ("Bearer", "Token")


class TooManyFailures(exceptions.Throttled):
    default_detail = "Too many failed sign-in attempts."


class HashedTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in {s.lower().encode() for s in SCHEMES}:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <key>'.")
        try:
            key = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                "The token contains invalid characters."
            ) from None
        http_request = request._request
        if not throttle.token_attempt_allowed(http_request):
            throttle.token_refused(http_request)  # counted and audited as a lock-out
            raise TooManyFailures(detail=throttle.locked_out_message())
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=hash_token(key), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            throttle.token_refused(http_request)
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        # One write per minute at most: the hot path stays read-only.
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword
