"""Notifications: one message to one channel (e-mail or the environment's
webhook), a row per delivery. `announce` and `announce_environment` only
write rows, inside the caller's transaction; the delivery job
(deployments/notifications.py) runs after it commits, so a slow or failing
webhook never blocks, nor rolls back, the change that caused it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone

from deployments.choices import Channel, DeliveryStatus, NotificationEvent
from deployments.models.queueing import enqueue_on_commit
from environments.models import Environment
from portal.core.choices import Role

DELIVER_JOB = "deployments.notifications.deliver"


class Notification(models.Model):
    """One message to one channel; a row per delivery job.

    About a deployment (approvals), or about an environment (an alarm
    transition, a budget threshold) or the portal itself (a broken audit
    chain), whose text is then stored in `subject`/`body`.
    """

    deployment = models.ForeignKey(
        "deployments.Deployment",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    event = models.CharField(max_length=20, choices=NotificationEvent.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipients = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        about = f"#{self.deployment_id}" if self.deployment_id else (self.subject or "portal")
        return f"{self.event} via {self.channel} for {about}"


def _recipients(deployment, event: str) -> list[str]:
    if event == NotificationEvent.APPROVAL_NEEDED:
        users = (
            get_user_model()
            .objects.filter(
                memberships__environment=deployment.environment,
                memberships__role__in=[Role.APPROVER, Role.ADMIN],
                is_active=True,
            )
            .exclude(pk=deployment.requested_by_id)
        )
        return sorted({u.email for u in users if u.email})
    requester = deployment.requested_by
    return [requester.email] if requester and requester.email else []


def announce(deployment, event: str) -> None:
    """Queue the notifications for an event (call inside the state change's transaction)."""
    rows = []
    recipients = _recipients(deployment, event)
    if recipients:
        rows.append(Notification(deployment=deployment, event=event, channel=Channel.EMAIL,
                                 recipients=recipients))  # fmt: skip
    if deployment.environment.webhook_url:
        rows.append(Notification(deployment=deployment, event=event, channel=Channel.WEBHOOK))
    for row in rows:
        row.save()
        # Only once the transaction commits; a Redis failure then leaves the row pending.
        enqueue_on_commit("low", DELIVER_JOB, row.pk)


def announce_environment(environment, event: str, subject: str, body: str) -> None:
    """Queue notifications about an environment (an alarm transition, a budget
    threshold) to its approvers and admins and its webhook; `environment=None`
    means the portal itself (a broken audit chain): superusers only."""
    users = get_user_model().objects.filter(is_active=True)
    if environment is None:
        users = users.filter(is_superuser=True)
    else:
        users = users.filter(
            memberships__environment=environment, memberships__role__in=[Role.APPROVER, Role.ADMIN]
        )
    recipients = sorted({u.email for u in users if u.email})
    common = {"environment": environment, "event": event, "subject": subject[:200], "body": body}
    rows = []
    if recipients:
        rows.append(Notification(channel=Channel.EMAIL, recipients=recipients, **common))
    if environment is not None and environment.webhook_url:
        rows.append(Notification(channel=Channel.WEBHOOK, **common))
    for row in rows:
        row.save()
        enqueue_on_commit("low", DELIVER_JOB, row.pk)
