"""Helpers shared by the tests of the server-rendered pages."""

from __future__ import annotations

from django.test import Client
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Deployment
from portal.core.models import AuditEvent


def browser(user) -> Client:
    """A browser client holding the user's session."""
    client = Client()
    client.force_login(user)
    return client


def last_event(action: str) -> AuditEvent | None:
    return AuditEvent.objects.filter(action=action).order_by("-seq").first()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def succeed(deployment, finished_at=None):
    """Mark a deployment as run to success, as the deploy job would."""
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Status.SUCCEEDED, finished_at=finished_at or timezone.now()
    )
    deployment.refresh_from_db()
    return deployment
