"""How a person proved who they are, and when: what an approval records and
what an environment's "fresh MFA" rule asks of an approver.

Methods, weakest first: `api_token` (a key a script holds), `password`,
`sso` (the identity provider signed the user in but did not say it used a
second factor), and the strong ones: `totp` and `recovery_code` (a local
account's second factor), `sso_mfa` (the identity provider's ID token named a
second factor in `amr` or an accepted `acr`).

A browser session keeps its last authentication under SESSION_KEY; the
sign-in paths (portal/views.py, portal/sso.py) write it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from portal.core.roles import Forbidden

SESSION_KEY = "gantry_authentication"
STRONG_METHODS = frozenset({"totp", "recovery_code", "sso_mfa"})
METHOD_LABELS = {
    "api_token": "API token",
    "password": "password",
    "sso": "single sign-on (no second factor named)",
    "totp": "password + authenticator code (TOTP)",
    "recovery_code": "password + recovery code",
    "sso_mfa": "single sign-on with MFA",
}


@dataclass(frozen=True)
class Authentication:
    """One proof of identity: how (`method`), when (`at`), and what the
    identity provider said about it (`detail`: amr, acr, auth_time)."""

    method: str
    at: datetime | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def strong(self) -> bool:
        return self.method in STRONG_METHODS

    @property
    def label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method or "unknown")

    def fresh(self, minutes: int, now: datetime | None = None) -> bool:
        """Strong, and no older than `minutes`."""
        if not self.strong or self.at is None:
            return False
        return (now or timezone.now()) - self.at <= timedelta(minutes=minutes)

    def as_session(self) -> dict[str, Any]:
        at = self.at.timestamp() if self.at else None
        return {"method": self.method, "at": at, "detail": self.detail}

    @classmethod
    def from_session(cls, data: Any) -> Authentication | None:
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            return None
        at = data.get("at")
        moment = datetime.fromtimestamp(at, tz=UTC) if isinstance(at, int | float) else None
        detail = data.get("detail") if isinstance(data.get("detail"), dict) else {}
        return cls(data["method"], moment, detail)


def remember(session, authentication: Authentication) -> None:
    """Keep the session's latest authentication."""
    session[SESSION_KEY] = authentication.as_session()


def of_session(session) -> Authentication | None:
    return Authentication.from_session(session.get(SESSION_KEY))


class StepUpRequired(Forbidden):
    """The environment wants a fresh strong authentication before this approval counts."""

    def __init__(self, message: str, *, minutes: int) -> None:
        super().__init__(message)
        self.minutes = minutes
