"""Sign-in events (and lock-outs) go into the audit trail; `announcement` carries news for people.

`announcement` is sent, inside the transaction that records it, when
something happened that people must hear about: an alarm changed, a budget
threshold was crossed (environments), the audit chain broke (the portal
itself). Arguments: `environment` (None: the portal itself), `event` (a
`deployments.choices.NotificationEvent` value: "alarm", "budget",
"chain_broken"), `subject`, `body`. deployments/notifications.py turns it
into e-mails and webhook calls, so the layers that notice things know
nothing of how people are told.
"""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from portal.core import audit, throttle

announcement = Signal()


@receiver(user_logged_in)
def audit_sign_in(sender, request, user, **kwargs) -> None:
    audit.record("auth.signed_in", ("auth.user", user.pk, user.get_username()), actor=user)


@receiver(user_logged_out)
def audit_sign_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        audit.record("auth.signed_out", ("auth.user", user.pk, user.get_username()), actor=user)


@receiver(user_login_failed)
def audit_failed_sign_in(sender, credentials, request=None, **kwargs) -> None:
    if throttle.is_locked_out(request):
        return  # axes has locked this attempt out: audit_lock_out records it
    # Django has already replaced the password with asterisks in `credentials`.
    username = str(credentials.get("username", ""))[:150]
    after = {"via": credentials["via"]} if credentials.get("via") else None
    audit.record(
        "auth.sign_in_failed",
        ("auth.user", "", username),
        actor_name=username or "anonymous",
        after=after,
    )


@receiver(user_locked_out)
def audit_lock_out(sender, request, username, ip_address, **kwargs) -> None:
    """An attempt refused (or the one that reached the limit) while the user
    name or address is locked out; the audit context carries the same address."""
    credentials = getattr(request, "axes_credentials", None) or {}
    audit.record(
        "auth.locked_out",
        ("auth.user", "", username or ""),
        actor_name=username or "anonymous",
        after={
            "username": username or "",
            "path": getattr(request, "path", ""),
            "via": credentials.get("via", "password"),
            "failures": getattr(request, "axes_failures_since_start", None),
        },
    )
