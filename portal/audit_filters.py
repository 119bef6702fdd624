"""Which audit events a user may see, filtered as the audit page and the API
ask. One function for both, so the page and the API never disagree."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.core.api_params import whole_number_error
from portal.core.models import AuditEvent
from portal.core.roles import visible_applications, visible_environments

FILTER_NAMES = ("actor", "application", "environment", "action", "since", "until")


@dataclass
class AuditFilter:
    """Parsed filters; `errors` maps a parameter name to what is wrong with it."""

    actor: str = ""
    application: str = ""  # slug
    environment: int | None = None
    action: str = ""
    since: date | None = None
    until: date | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params) -> AuditFilter:
        parsed = cls(
            actor=params.get("actor", "").strip(),
            application=params.get("application", "").strip(),
            action=params.get("action", "").strip(),
        )
        for name in ("actor", "application", "action"):
            if "\x00" in getattr(parsed, name):
                parsed.errors[name] = "Remove the NUL character."
                setattr(parsed, name, "")
        raw_env = params.get("environment", "").strip()
        if raw_env:
            error = whole_number_error(raw_env)
            if error is None:
                parsed.environment = int(raw_env)
            else:
                parsed.errors["environment"] = f"Give the environment's numeric id. {error}"
        for name in ("since", "until"):
            raw = params.get(name, "").strip()
            if raw:
                try:
                    setattr(parsed, name, date.fromisoformat(raw))
                except ValueError:
                    parsed.errors[name] = "Use a date as YYYY-MM-DD."
        if parsed.since and parsed.until and parsed.until < parsed.since:
            parsed.errors["until"] = "The end date is before the start date."
        return parsed

    def as_query(self) -> dict[str, str]:
        values = {
            "actor": self.actor,
            "application": self.application,
            "environment": str(self.environment or ""),
            "action": self.action,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


def action_matches(action: str) -> Q:
    """An action, or every action under a prefix: "deployment." (or "deployment")
    finds deployment.requested, deployment.approved, …; "deployment.approved"
    finds exactly that."""
    prefix = action if action.endswith(".") else action + "."
    return Q(action__startswith=prefix) | Q(action=action.rstrip("."))


def visible_events(user) -> QuerySet:
    """Superusers see the whole trail; others the events of their environments
    and applications, and their own sign-ins and tokens."""
    events = AuditEvent.objects.all()
    if user.is_superuser:
        return events
    env_ids = visible_environments(user).values("pk")
    app_ids = visible_applications(user).values("pk")
    return events.filter(
        Q(environment_id__in=env_ids)
        | Q(environment_id__isnull=True, application_id__in=app_ids)
        | Q(actor_id=user.pk, application_id__isnull=True, environment_id__isnull=True)
    )


def filtered_events(user, audit_filter: AuditFilter) -> QuerySet:
    events = visible_events(user)
    if audit_filter.actor:
        # Case-insensitive: people type "Alice" for alice (a functional index serves it).
        events = events.filter(actor_name__iexact=audit_filter.actor)
    if audit_filter.application:
        events = events.filter(application__slug=audit_filter.application)
    if audit_filter.environment:
        events = events.filter(environment_id=audit_filter.environment)
    if audit_filter.action:
        events = events.filter(action_matches(audit_filter.action))
    tz = timezone.get_current_timezone()
    if audit_filter.since:
        events = events.filter(at__gte=datetime.combine(audit_filter.since, time.min, tz))
    if audit_filter.until and audit_filter.until < date.max:  # the last day: no end at all
        end = datetime.combine(audit_filter.until + timedelta(days=1), time.min, tz)
        events = events.filter(at__lt=end)
    return events.order_by("-seq")
