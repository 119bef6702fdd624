from django.db import models


class Tier(models.TextChoices):
    """How close to customers an environment is; drives defaults and dashboard order."""

    DEVELOPMENT = "development", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class FreezeKind(models.TextChoices):
    ONE_OFF = "one_off", "One-off"
    WEEKLY = "weekly", "Weekly"


class ImageVerification(models.TextChoices):
    """Whether a request checks its images against their registries first, and
    what an image that cannot be checked (registry unreachable) does. An image
    the registry says is not there is refused whenever the check runs."""

    OFF = "off", "Not checked"
    WARN = "warn", "Checked; an unverifiable image is shown, not refused"
    BLOCK = "block", "Checked; an unverifiable image refuses the request"


class OverrideStatus(models.TextChoices):
    PENDING = "pending", "Awaiting second approver"
    ACTIVE = "active", "Active"
    REJECTED = "rejected", "Rejected"
    REVOKED = "revoked", "Revoked"


class StepKind(models.TextChoices):
    TERRAFORM = "terraform", "Terraform plan/apply"
    ECS_ROLLING = "ecs_rolling", "ECS rolling update"
    ECS_BLUE_GREEN = "ecs_blue_green", "ECS blue/green"
    K8S_ROLLING = "k8s_rolling", "Kubernetes rolling update"
    RDS_SNAPSHOT = "rds_snapshot", "RDS snapshot"
    COMMAND = "command", "Command"
    HTTP_CHECK = "http_check", "HTTP check"
    BAKE = "bake", "Bake (watch alarms)"


TIER_COLOURS = {Tier.DEVELOPMENT: "grey", Tier.STAGING: "blue", Tier.PRODUCTION: "red"}
OVERRIDE_COLOURS = {
    OverrideStatus.PENDING: "amber",
    OverrideStatus.ACTIVE: "red",
    OverrideStatus.REJECTED: "grey",
    OverrideStatus.REVOKED: "grey",
}
WEEKDAYS = [(0, "Monday"), (1, "Tuesday"), (2, "Wednesday"), (3, "Thursday"),
            (4, "Friday"), (5, "Saturday"), (6, "Sunday")]  # fmt: skip


class AlarmSource(models.TextChoices):
    CLOUDWATCH = "cloudwatch", "CloudWatch"
    ALERTMANAGER = "alertmanager", "Alertmanager"


class AlarmState(models.TextChoices):
    """CloudWatch's three states, plus `unknown`: the source could not be read.
    An unreachable source is never shown as OK."""

    OK = "OK", "OK"
    ALARM = "ALARM", "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA", "Insufficient data"
    UNKNOWN = "unknown", "Unknown"


# Worst first: an unreadable source is never better than insufficient data.
ALARM_RANK = {
    AlarmState.ALARM: 0,
    AlarmState.UNKNOWN: 1,
    AlarmState.INSUFFICIENT_DATA: 2,
    AlarmState.OK: 3,
}

ALARM_COLOURS = {
    AlarmState.OK: "green",
    AlarmState.ALARM: "red",
    AlarmState.INSUFFICIENT_DATA: "amber",
    AlarmState.UNKNOWN: "grey",
}
