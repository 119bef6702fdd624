"""Sign-in events go into the audit trail; `announcement` carries news for people.

`announcement` is sent, inside the transaction that records it, when
something happened that people must hear about: an alarm changed, a budget
threshold was crossed (environments), the audit chain broke (the portal
itself). Arguments: `environment` (None: the portal itself), `event` (a
`deployments.choices.NotificationEvent` value: "alarm", "budget",
"chain_broken"), `subject`, `body`. deployments/notifications.py turns it
into e-mails and webhook calls, so the layers that notice things know
nothing of how people are told.
"""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from portal.core import audit

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
    # Django has already replaced the password with asterisks in `credentials`.
    username = str(credentials.get("username", ""))[:150]
    audit.record(
        "auth.sign_in_failed", ("auth.user", "", username), actor_name=username or "anonymous"
    )
