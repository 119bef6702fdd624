"""manage.py register_release APP VERSION --artifact SERVICE=IMAGE ... --user NAME

For CI jobs without an API token at hand. Prints the new release's id alone
on stdout, so `id=$(manage.py register_release ...)` works.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployments.models import Release
from environments.models import Application
from portal.core import audit
from portal.core.management.commands.issue_token import acting_user
from portal.core.roles import PolicyError


def parse_artifacts(pairs: list[str]) -> dict[str, str]:
    artifacts: dict[str, str] = {}
    for pair in pairs:
        service, sep, image = pair.partition("=")
        service, image = service.strip(), image.strip()
        if not sep or not service or not image:
            raise CommandError(f"--artifact: {pair!r} is not SERVICE=IMAGE.")
        if service in artifacts:
            raise CommandError(f"--artifact: {service} is given twice.")
        artifacts[service] = image
    return artifacts


class Command(BaseCommand):
    help = "Register a release: one image pinned by digest per service."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("application", help="Application slug, e.g. fraud-detector.")
        parser.add_argument("version")
        parser.add_argument(
            "--artifact",
            action="append",
            default=[],
            metavar="SERVICE=IMAGE",
            help="repeat per service; IMAGE as repository@sha256:<64 hex digits>",
        )
        parser.add_argument("--notes", default="")
        parser.add_argument("--commit", default="")
        parser.add_argument(
            "--commit-author", default="", help="Who wrote the commit: 'Name <email>' or a user."
        )
        parser.add_argument("--user", required=True, help="Who registers it (needs deployer).")

    def handle(self, *args, **options) -> None:
        user = acting_user(options["user"])
        application = Application.objects.filter(slug=options["application"]).first()
        if application is None:
            raise CommandError(f"application: no application {options['application']!r}.")
        artifacts = parse_artifacts(options["artifact"])
        context = audit.set_context(
            audit.AuditContext(actor=user, request_id=audit.new_request_id())
        )
        try:
            release = Release.register(
                application,
                options["version"],
                artifacts,
                user,
                notes=options["notes"],
                commit=options["commit"],
                commit_author=options["commit_author"],
            )
        except PolicyError as exc:
            raise CommandError(f"{exc.field or 'error'}: {exc.message}") from None
        finally:
            audit.reset_context(context)
        self.stdout.write(str(release.pk))
