"""The catalog: applications, their services and environments, and the rules
that protect each environment (approvals, promotion order, freeze windows)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from environments.choices import (
    AlarmSource,
    AlarmState,
    FreezeKind,
    ImageVerification,
    OverrideStatus,
    StepKind,
    Tier,
)
from portal.core import audit
from portal.core.crypto import EncryptedJSONField, EncryptedTextField
from portal.core.prepared import prepared
from portal.core.roles import PolicyError, has_role


class Application(models.Model):
    """A deployable system, e.g. `fraud-detector`."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Service(models.Model):
    """One deployable unit of an application; each release pins one image per service."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="services")
    slug = models.SlugField()
    name = models.CharField(max_length=100)
    # Where its images may come from: a release pinning an image from any other
    # repository is refused (an empty list accepts any).
    image_repositories = models.JSONField(
        default=list,
        blank=True,
        help_text="The repositories its images come from, e.g. "
        '["123456789012.dkr.ecr.ca-central-1.amazonaws.com/fraud-api"]; empty: any.',
    )

    class Meta:
        ordering = ["application", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["application", "slug"], name="service_unique_slug")
        ]

    def __str__(self) -> str:
        return f"{self.application.slug}/{self.slug}"

    def allows(self, repository: str) -> bool:
        return not self.image_repositories or repository in self.image_repositories


class Environment(models.Model):
    """A target of deployments, with the protection rules an auditor will ask about."""

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="environments"
    )
    slug = models.SlugField()
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(help_text="Position on the promotion path (dev first).")
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.DEVELOPMENT)

    # Protection rules.
    required_approvals = models.PositiveSmallIntegerField(default=0)
    approver_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="If set, only approvers in this group count.",
    )
    second_approver_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="If set, at least one approval must come from this group (e.g. risk).",
    )
    approval_ttl_hours = models.PositiveIntegerField(
        default=24, help_text="A request not fully approved within this many hours expires."
    )
    require_previous_success = models.BooleanField(
        default=False,
        help_text="A release may come here only after succeeding in the previous environment.",
    )
    rollback_required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvals a manual rollback needs (automatic ones need none)."
    )
    # Separation of duties (EU DORA RTS 2024/1774 Art. 17): approvers independent
    # of the requester (always) and of the release's implementers (this rule).
    implementers_may_not_approve = models.BooleanField(
        default=False,
        help_text="Whoever registered the release, and the author of its commit when that "
        "maps to a user, may not approve or reject its deployments here.",
    )
    approval_mfa_minutes = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text="Approvals need a strong authentication (TOTP, or the identity provider's "
        "MFA) at most this many minutes old; empty: no such rule.",
    )

    # Policy as code (environments/plan_policy.py, policies/): a plan that
    # raises the monthly cost by more than this needs an approval from the group.
    cost_increase_limit_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="A plan raising the monthly cost by more than this many USD needs one more "
        "approval, from the cost approval group; empty: no such rule.",
    )
    cost_approval_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who approves a cost increase above the limit (e.g. finance).",
    )

    image_verification = models.CharField(
        max_length=8,
        choices=ImageVerification.choices,
        default=ImageVerification.OFF,
        help_text="Check each image against its registry before a deployment is planned.",
    )

    # Where it runs (used by the deploy engine).
    region = models.CharField(max_length=32, blank=True, default="ca-central-1")
    aws_role_arn = models.CharField(max_length=255, blank=True)
    kube_context = models.CharField(max_length=100, blank=True)
    variables = models.JSONField(default=dict, blank=True)
    secret_variables = EncryptedJSONField(blank=True, default=dict)
    health_urls = models.JSONField(default=list, blank=True)
    monthly_budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    # Where the dashboard reads alarm states: the same shape as a bake step's
    # `cloudwatch` / `alertmanager` sections (validated by the same code).
    alarm_sources = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"cloudwatch": {"alarm_prefix": "…"}, "alertmanager": {"url": "…", '
        '"matchers": ["namespace=…"]}}',
    )
    # Written by the alarm poller once per poll, instead of touching every alarm row.
    alarms_checked_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the alarm sources were last read."
    )
    # Cost Explorer groups spend by this cost-allocation tag value
    # (tag key COST_TAG_KEY, "Environment" by default).
    cost_tag = models.CharField(
        max_length=128,
        blank=True,
        help_text="Value of the cost-allocation tag for this environment; "
        "empty means <application>-<environment>.",
    )

    # Notifications.
    webhook_url = EncryptedTextField(
        blank=True, help_text="Slack-compatible incoming webhook; stored encrypted."
    )

    class Meta:
        ordering = ["application", "order"]
        constraints = [
            models.UniqueConstraint(fields=["application", "slug"], name="environment_unique_slug"),
            models.UniqueConstraint(
                fields=["application", "order"], name="environment_unique_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application.slug}/{self.slug}"

    def previous(self) -> Environment | None:
        """The environment before this one in its application (the promotion rule's source)."""
        return _previous_environment.first(application_id=self.application_id, order=self.order)

    def clean(self) -> None:
        super().clean()
        if self.cost_increase_limit_usd is not None and not self.cost_approval_group_id:
            raise ValidationError(
                {"cost_approval_group": "A cost increase limit needs the group that approves it."}
            )

    def policy_snapshot(self) -> dict:
        """The protection rules as plain data, for audit events and evidence."""
        return {
            "required_approvals": self.required_approvals,
            "approver_group": self.approver_group.name if self.approver_group_id else None,
            "second_approver_group": (
                self.second_approver_group.name if self.second_approver_group_id else None
            ),
            "approval_ttl_hours": self.approval_ttl_hours,
            "require_previous_success": self.require_previous_success,
            "rollback_required_approvals": self.rollback_required_approvals,
            "implementers_may_not_approve": self.implementers_may_not_approve,
            "approval_mfa_minutes": self.approval_mfa_minutes,
            "image_verification": self.image_verification,
            "cost_increase_limit_usd": (
                None if self.cost_increase_limit_usd is None else str(self.cost_increase_limit_usd)
            ),
            "cost_approval_group": (
                self.cost_approval_group.name if self.cost_approval_group_id else None
            ),
        }

    def active_freeze(self, now: datetime | None = None) -> tuple[FreezeWindow, datetime] | None:
        """The freeze window in force now and when it ends, or None."""
        now = now or timezone.now()
        best = None
        for window in self.freeze_windows.all():
            until = window.active_until(now)
            if until is not None and (best is None or until > best[1]):
                best = (window, until)
        return best

    def frozen_until_text(self, freeze: tuple[FreezeWindow, datetime]) -> str:
        """ "<env> is frozen until <end> (<reason>)", the end in the portal's time
        zone (TIME_ZONE), as every page shows it, whatever the window's own zone."""
        window, until = freeze
        end = timezone.localtime(until)
        return f"{self} is frozen until {end:%Y-%m-%d %H:%M %Z} ({window.reason})"

    def active_override(self, now: datetime | None = None) -> FreezeOverride | None:
        now = now or timezone.now()
        return self.freeze_overrides.filter(
            status=OverrideStatus.ACTIVE, expires_at__gt=now
        ).first()


@prepared(application_id=int, order=int)
def _previous_environment(application_id: int, order: int) -> models.QuerySet:
    # Prepared: the deployment and environment pages read it on every request.
    return Environment.objects.filter(application_id=application_id, order__lt=order).order_by(
        "-order"
    )[:1]


class FreezeWindow(models.Model):
    """A period in which new deployments are refused: one-off, or every week.

    Weekly windows are written in the environment's local time zone and may
    wrap over the end of the week (Friday 18:00 → Monday 06:00).
    """

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="freeze_windows"
    )
    kind = models.CharField(max_length=8, choices=FreezeKind.choices)
    reason = models.CharField(max_length=200)
    # One-off.
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    # Weekly.
    start_weekday = models.PositiveSmallIntegerField(null=True, blank=True)
    start_time = models.TimeField(null=True, blank=True)
    end_weekday = models.PositiveSmallIntegerField(null=True, blank=True)
    end_time = models.TimeField(null=True, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")

    class Meta:
        ordering = ["environment", "id"]

    def __str__(self) -> str:
        return f"{self.environment}: {self.reason}"

    def clean(self) -> None:
        errors = {}
        if self.kind == FreezeKind.ONE_OFF:
            if not self.starts_at:
                errors["starts_at"] = "A one-off freeze needs a start."
            if not self.ends_at:
                errors["ends_at"] = "A one-off freeze needs an end."
            elif self.starts_at and self.ends_at <= self.starts_at:
                errors["ends_at"] = "The end must be after the start."
        else:
            for name in ("start_weekday", "start_time", "end_weekday", "end_time"):
                if getattr(self, name) is None:
                    errors[name] = "A weekly freeze needs this."
            for name in ("start_weekday", "end_weekday"):
                value = getattr(self, name)
                if value is not None and not 0 <= value <= 6:
                    errors[name] = "Weekday is 0 (Monday) to 6 (Sunday)."
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            errors["time_zone"] = f"Unknown time zone {self.time_zone!r}."
        if errors:
            raise ValidationError(errors)

    def active_until(self, now: datetime) -> datetime | None:
        """If the window covers `now`, the moment it ends; otherwise None."""
        if self.kind == FreezeKind.ONE_OFF:
            if self.starts_at <= now < self.ends_at:
                return self.ends_at
            return None
        tz = ZoneInfo(self.time_zone)
        local = now.astimezone(tz)
        minute_of_week = local.weekday() * 1440 + local.hour * 60 + local.minute
        start = self.start_weekday * 1440 + self.start_time.hour * 60 + self.start_time.minute
        end = self.end_weekday * 1440 + self.end_time.hour * 60 + self.end_time.minute
        inside = (
            start <= minute_of_week < end
            if start < end
            else (minute_of_week >= start or minute_of_week < end)
        )
        if not inside:
            return None
        days_ahead = (self.end_weekday - local.weekday()) % 7
        end_date = local.date() + timedelta(days=days_ahead)
        until = datetime.combine(end_date, self.end_time, tzinfo=tz)
        if until <= now:
            until = datetime.combine(end_date + timedelta(days=7), self.end_time, tzinfo=tz)
        return until


@prepared(environment_id=int)
def freeze_windows_of(environment_id: int) -> models.QuerySet:
    # Prepared: every page showing an environment's freeze reads it
    # (environments.views.decorate_environment).
    return FreezeWindow.objects.filter(environment_id=environment_id)


class FreezeOverride(models.Model):
    """Break-glass: an admin lifts a freeze for a while, with a typed reason,
    once a second person (approver or admin of the environment) agrees."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="freeze_overrides"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    duration = models.DurationField(default=timedelta(hours=4))
    status = models.CharField(
        max_length=10, choices=OverrideStatus.choices, default=OverrideStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Break-glass on {self.environment} by {self.requested_by}"

    @property
    def is_active(self) -> bool:
        return (
            self.status == OverrideStatus.ACTIVE
            and self.expires_at is not None
            and self.expires_at > timezone.now()
        )

    def _decide(self, user, status: str, action: str) -> None:
        if user.pk == self.requested_by_id:
            raise PolicyError("The break-glass request needs a second person; you asked for it.")
        if not has_role(user, self.environment, "approver", "admin"):
            raise PolicyError("Only approvers or admins of this environment may decide this.")
        now = timezone.now()
        expires = now + self.duration if status == OverrideStatus.ACTIVE else None
        with transaction.atomic():
            updated = FreezeOverride.objects.filter(
                pk=self.pk, status=OverrideStatus.PENDING
            ).update(status=status, decided_by=user, decided_at=now, expires_at=expires)
            if not updated:
                raise PolicyError("This break-glass request was already decided.")
            self.status, self.decided_by, self.decided_at, self.expires_at = (
                status, user, now, expires,
            )  # fmt: skip
            audit.record(
                action,
                self,
                actor=user,
                before={"status": OverrideStatus.PENDING},
                after={"status": status, "expires_at": expires, "reason": self.reason},
            )

    def approve(self, user) -> None:
        self._decide(user, OverrideStatus.ACTIVE, "freeze_override.approved")

    def reject(self, user) -> None:
        self._decide(user, OverrideStatus.REJECTED, "freeze_override.rejected")

    @classmethod
    def request(cls, environment: Environment, user, reason: str, duration: timedelta):
        if not has_role(user, environment, "admin"):
            raise PolicyError("Only admins of this environment may break the glass.")
        if not reason.strip():
            raise PolicyError("Give a reason for overriding the freeze.")
        if not timedelta(minutes=5) <= duration <= timedelta(hours=24):
            raise PolicyError("A break-glass override lasts between 5 minutes and 24 hours.")
        with transaction.atomic():
            override = cls.objects.create(
                environment=environment, requested_by=user, reason=reason.strip(), duration=duration
            )
            audit.record(
                "freeze_override.requested",
                override,
                actor=user,
                after={
                    "reason": override.reason,
                    "duration_minutes": duration // timedelta(minutes=1),
                },
            )
        return override


class Step(models.Model):
    """One step of an environment's deployment process, run in `order`."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["environment", "order"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "order"], name="step_unique_order")
        ]

    def __str__(self) -> str:
        return f"{self.order}. {self.name} ({self.kind})"


class Alarm(models.Model):
    """One alarm of an environment as last polled from its source."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="alarms")
    source = models.CharField(max_length=16, choices=AlarmSource.choices)
    name = models.CharField(max_length=255)
    state = models.CharField(max_length=20, choices=AlarmState.choices)
    reason = models.TextField(blank=True)
    since = models.DateTimeField(help_text="When the alarm entered its current state.")
    checked_at = models.DateTimeField(
        help_text="When a poll last changed this row; the environment's alarms_checked_at "
        "says when its sources were last read."
    )

    class Meta:
        ordering = ["environment", "source", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "source", "name"], name="alarm_unique_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.environment}: {self.name} {self.state}"


class AlarmTransition(models.Model):
    """A change of an alarm's state: the alarm history of an environment."""

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="transitions")
    # Copied from the alarm so an environment's history is one index scan.
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="alarm_transitions"
    )
    from_state = models.CharField(max_length=20, choices=AlarmState.choices, blank=True)
    to_state = models.CharField(max_length=20, choices=AlarmState.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["environment", "-at"])]

    def __str__(self) -> str:
        return f"{self.alarm.name}: {self.from_state or '∅'} → {self.to_state}"


class CostSnapshot(models.Model):
    """What one environment actually cost on one day, from Cost Explorer."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="cost_snapshots"
    )
    day = models.DateField()
    amount_usd = models.DecimalField(max_digits=12, decimal_places=4)
    # Cost Explorer marks the last days as estimated until billing settles.
    estimated = models.BooleanField(default=False)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["environment", "-day"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "day"], name="cost_snapshot_unique_day")
        ]

    def __str__(self) -> str:
        return f"{self.environment} {self.day}: ${self.amount_usd}"


class BudgetAlert(models.Model):
    """A month's spend crossed a share of the budget; one row per threshold and
    month, so each alert is sent once."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="budget_alerts"
    )
    month = models.DateField(help_text="First day of the month.")
    threshold_percent = models.PositiveSmallIntegerField()
    spent_usd = models.DecimalField(max_digits=12, decimal_places=2)
    forecast_usd = models.DecimalField(max_digits=12, decimal_places=2)
    budget_usd = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "month", "threshold_percent"],
                name="budget_alert_once_per_month",
            )
        ]

    def __str__(self) -> str:
        return f"{self.environment} {self.month:%Y-%m}: {self.threshold_percent}%"
