"""manage.py map_group GROUP ROLE [--application SLUG] [--environment SLUG] [--remove]

Map an IdP group to a role on every environment (no option), on one
application's environments (--application) or on one environment
(--environment; with --application when the slug names environments of
several applications). Idempotent: mapping twice changes nothing. Members
already known from their last sign-in get (or lose) the role at once; the
others at their next sign-in or re-check. Everything is audited.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.models import Application, Environment
from portal.core import audit
from portal.core.choices import Role
from portal.core.group_roles import map_group, unmap_group
from portal.core.models import GroupRoleMapping


def find_application(slug: str) -> Application:
    application = Application.objects.filter(slug=slug).first()
    if application is None:
        known = ", ".join(Application.objects.order_by("slug").values_list("slug", flat=True))
        raise CommandError(f"No application {slug!r} (known: {known or 'none'}).")
    return application


def find_environment(slug: str, application: Application | None) -> Environment:
    found = Environment.objects.filter(slug=slug).select_related("application")
    if application is not None:
        found = found.filter(application=application)
    found = list(found)
    if not found:
        where = f" in {application.slug}" if application else ""
        raise CommandError(f"No environment {slug!r}{where}.")
    if len(found) > 1:
        apps = ", ".join(sorted(env.application.slug for env in found))
        raise CommandError(
            f"Environment {slug!r} exists in several applications ({apps}): "
            "name one with --application."
        )
    return found[0]


class Command(BaseCommand):
    help = "Map an IdP group to a role on all environments, one application or one environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("group", help="The group name as the IdP sends it.")
        parser.add_argument("role", help=f"One of: {', '.join(Role.values)}.")
        parser.add_argument("--application", metavar="SLUG")
        parser.add_argument("--environment", metavar="SLUG")
        parser.add_argument("--remove", action="store_true", help="Remove the mapping instead.")

    def handle(self, *args, group: str, role: str, application: str | None,
               environment: str | None, remove: bool, **options) -> None:  # fmt: skip
        group = group.strip()
        if not group or len(group) > 255:
            raise CommandError("GROUP: give 1 to 255 characters.")
        if role not in Role.values:
            raise CommandError(f"Unknown role {role!r}: use one of {', '.join(Role.values)}.")
        app = find_application(application) if application else None
        env = find_environment(environment, app) if environment else None
        if env is not None:
            app = None  # the environment says it all; the option only disambiguated
        context = audit.set_context(audit.AuditContext(request_id=audit.new_request_id()))
        try:
            if remove:
                self._remove(group, role, app, env)
            else:
                mapping, created = map_group(group, role, application=app, environment=env)
                verb = "Mapped" if created else "Already mapped:"
                self.stdout.write(f"{verb} {mapping}.")
        finally:
            audit.reset_context(context)

    def _remove(self, group: str, role: str, app, env) -> None:
        mapping = GroupRoleMapping.objects.filter(
            group=group, role=role, application=app, environment=env
        ).first()
        if mapping is None:
            self.stdout.write(f"No mapping of {group} to {role} there; nothing removed.")
            return
        unmap_group(mapping)
        self.stdout.write(f"Removed {mapping}.")
