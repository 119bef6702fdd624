"""manage.py issue_token USERNAME [--name NAME]: issue an API token (audited).

The clear key is printed once, as the last line, so a script can take it with
`tail -n 1`; only its hash is stored.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.core import audit, tokens


def acting_user(username: str):
    """The user a command acts as, or a CommandError a person can act on."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user named {username!r}.")
    if not user.is_active:
        raise CommandError(f"User {username!r} is deactivated.")
    return user


class Command(BaseCommand):
    help = "Issue an API token for a user and print its key (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to tell tokens apart.")

    def handle(self, *args, username: str, name: str, **options) -> None:
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("--name: give 1 to 100 characters.")
        user = acting_user(username)
        # No request here: name the user in the audit trail explicitly.
        context = audit.set_context(
            audit.AuditContext(actor=user, request_id=audit.new_request_id())
        )
        try:
            token, key = tokens.issue(user, name)
        finally:
            audit.reset_context(context)
        self.stdout.write(
            f"Issued token {token.name!r} ({token.hint}…) for {user.get_username()}. "
            "Store the key now; it is not shown again:"
        )
        self.stdout.write(key)
