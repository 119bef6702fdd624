"""manage.py revoke_token USERNAME (--hint PREFIX | --all): revoke API tokens (audited)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from portal.core import audit
from portal.core import tokens as api_tokens
from portal.core.management.commands.issue_token import acting_user
from portal.core.models import ApiToken


class Command(BaseCommand):
    help = "Revoke one of a user's API tokens (by the start of its key) or all of them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--hint", help="The first characters of the key, e.g. gty_AbC1.")
        which.add_argument(
            "--all", dest="revoke_all", action="store_true", help="Revoke every active token."
        )

    def handle(self, *args, username: str, hint: str | None, **options) -> None:
        user = acting_user(username)
        tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
        if hint is not None:
            # The stored hint is the key's first 10 characters; a longer prefix still matches.
            prefix = hint.strip()[:10]
            if len(prefix) < 5:
                raise CommandError("--hint: give at least the first 5 characters of the key.")
            tokens = tokens.filter(hint__startswith=prefix)
            if len(tokens) > 1:
                raise CommandError(
                    f"--hint: {prefix!r} matches {len(tokens)} tokens; give more characters."
                )
        tokens = list(tokens)
        if not tokens:
            raise CommandError(f"{username} has no active token matching that.")
        context = audit.set_context(
            audit.AuditContext(actor=user, request_id=audit.new_request_id())
        )
        try:
            with transaction.atomic():
                revoked = [token for token in tokens if api_tokens.revoke(token)]
        finally:
            audit.reset_context(context)
        for token in revoked:
            self.stdout.write(f"Revoked {token.name!r} ({token.hint}…).")
