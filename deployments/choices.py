from django.db import models


class Status(models.TextChoices):
    PLANNING = "planning", "Planning"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


OPEN_STATUSES = (Status.PLANNING, Status.AWAITING_APPROVAL, Status.QUEUED, Status.RUNNING)
FINAL_STATUSES = (
    Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED,
)  # fmt: skip

STATUS_COLOURS = {
    Status.PLANNING: "blue",
    Status.AWAITING_APPROVAL: "amber",
    Status.QUEUED: "blue",
    Status.RUNNING: "blue",
    Status.SUCCEEDED: "green",
    Status.FAILED: "red",
    Status.CANCELLED: "grey",
    Status.REJECTED: "red",
    Status.EXPIRED: "grey",
}


class Kind(models.TextChoices):
    DEPLOY = "deploy", "Deploy"
    ROLLBACK = "rollback", "Rollback"


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class NotificationEvent(models.TextChoices):
    APPROVAL_NEEDED = "approval_needed", "Approval needed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    ALARM = "alarm", "Alarm state changed"
    BUDGET = "budget", "Budget threshold crossed"
    DRIFT = "drift", "Drift state changed"
    EMERGENCY_REVIEW = "emergency_review", "Emergency change to review"
    CHAIN_BROKEN = "chain_broken", "Audit chain broken"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class Stream(models.TextChoices):
    STDOUT = "stdout", "stdout"
    STDERR = "stderr", "stderr"
    SYSTEM = "system", "system"


class DriftState(models.TextChoices):
    IN_SYNC = "in_sync", "In sync"
    DRIFTED = "drifted", "Drifted"
    UNKNOWN = "unknown", "Unknown"


class DriftKind(models.TextChoices):
    SERVICE = "service", "Running service"
    TERRAFORM = "terraform", "Terraform"
