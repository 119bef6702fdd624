"""Sign-in events go into the audit trail."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from portal import audit


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
