"""Tell people: deliver Notification rows (e-mail to the environment's
approvers or the requester, the environment's Slack-compatible webhook).

The rows are written by deployments/models/notification.py inside the
transaction of the change; `deliver` runs as an RQ job after it commits. News
from the layers below (alarms, budgets, a broken audit chain) arrives on the
`announcement` signal and is queued the same way.
"""

from __future__ import annotations

import logging

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Channel, DeliveryStatus, NotificationEvent
from deployments.models import Notification, announce_environment
from portal.core.signals import announcement

log = logging.getLogger(__name__)


def _message(deployment, event: str) -> tuple[str, str]:
    url = settings.PORTAL_URL.rstrip("/") + reverse("deployment-detail", args=[deployment.pk])
    env, release = deployment.environment, deployment.release
    subject = {
        NotificationEvent.APPROVAL_NEEDED: f"Approval needed: {release} to {env}",
        NotificationEvent.APPROVED: f"Approved: {release} to {env}",
        NotificationEvent.REJECTED: f"Rejected: {release} to {env}",
    }[event]
    who = deployment.requested_by.get_username() if deployment.requested_by else "Gantry"
    body = f"{subject}\nRequested by {who}: {deployment.reason}\n{url}\n"
    return subject, body


@receiver(announcement, dispatch_uid="notifications-announcement")
def _announcement(sender, environment, event: str, subject: str, body: str, **kwargs) -> None:
    announce_environment(environment, NotificationEvent(event), subject, body)


def deliver(notification_id: int) -> str:
    """RQ job: send one notification. Safe to run twice: a sent row is left alone."""
    notification = Notification.objects.select_related(
        "environment",
        "deployment__environment",
        "deployment__release__application",
        "deployment__requested_by",
    ).get(pk=notification_id)
    if notification.status == DeliveryStatus.SENT:
        return "already sent"
    if notification.deployment is not None:
        subject, body = _message(notification.deployment, notification.event)
        environment = notification.deployment.environment
    else:
        subject, body = notification.subject, notification.body
        environment = notification.environment
    try:
        if notification.channel == Channel.EMAIL:
            send_mail(subject, body, None, notification.recipients, fail_silently=False)
        else:
            response = requests.post(
                environment.webhook_url,
                json={"text": body},
                timeout=settings.WEBHOOK_TIMEOUT,
            )
            response.raise_for_status()
    except Exception as exc:  # any delivery problem is recorded, never raised to the caller
        # The webhook URL is a secret: log the exception type and status, not the URL.
        reason = type(exc).__name__
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status:
            reason += f" (HTTP {status})"
        log.warning("notification %s via %s failed: %s", notification.pk, notification.channel,
                    reason)  # fmt: skip
        Notification.objects.filter(pk=notification.pk).update(
            status=DeliveryStatus.FAILED, error=reason, attempts=notification.attempts + 1
        )
        return "failed"
    Notification.objects.filter(pk=notification.pk).update(
        status=DeliveryStatus.SENT, sent_at=timezone.now(), attempts=notification.attempts + 1
    )
    return "sent"
