"""Tell people about deployments: email to the environment's approvers (or the
requester) and an optional Slack-compatible webhook per environment.

`announce` only writes Notification rows; delivery happens in an RQ job after
the transaction commits, so a slow or failing webhook never blocks, nor rolls
back, the request that caused it.
"""

from __future__ import annotations

import logging

import django_rq
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Channel, DeliveryStatus, NotificationEvent
from portal.core.choices import Role
from portal.core.signals import announcement

log = logging.getLogger(__name__)


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


def announce(deployment, event: str) -> None:
    """Queue the notifications for an event (call inside the state change's transaction)."""
    from deployments.models import Notification

    rows = []
    recipients = _recipients(deployment, event)
    if recipients:
        rows.append(Notification(deployment=deployment, event=event, channel=Channel.EMAIL,
                                 recipients=recipients))  # fmt: skip
    if deployment.environment.webhook_url:
        rows.append(Notification(deployment=deployment, event=event, channel=Channel.WEBHOOK))
    for row in rows:
        row.save()
        # django-rq's on_db_commit mode enqueues only when the transaction commits.
        django_rq.get_queue("low").enqueue(deliver, row.pk)


def announce_environment(environment, event: str, subject: str, body: str) -> None:
    """Queue notifications about an environment (an alarm transition, a budget
    threshold) to its approvers and admins and its webhook; `environment=None`
    means the portal itself (a broken audit chain): superusers only."""
    from deployments.models import Notification

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
        django_rq.get_queue("low").enqueue(deliver, row.pk)


@receiver(announcement, dispatch_uid="notifications-announcement")
def _announcement(sender, environment, event: str, subject: str, body: str, **kwargs) -> None:
    announce_environment(environment, NotificationEvent(event), subject, body)


def deliver(notification_id: int) -> str:
    """RQ job: send one notification. Safe to run twice: a sent row is left alone."""
    from deployments.models import Notification

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
