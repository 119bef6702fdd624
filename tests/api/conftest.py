"""API test helpers: clients that authenticate with real, hashed tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.choices import Status
from deployments.models import Deployment, Release
from portal.core import tokens
from portal.core.models import AuditEvent
from tests.conftest import env


@pytest.fixture
def api(users) -> Callable[[str], APIClient]:
    """api("alice") → a client sending `Authorization: Token <alice's new key>`."""

    def client_for(name: str) -> APIClient:
        _, key = tokens.issue(users[name], "tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return client_for


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


def request_deployment(release: Release, users: dict[str, User], slug: str = "staging",
                       who: str = "alice") -> Deployment:  # fmt: skip
    return Deployment.request(release, env(release.application, slug), users[who], "hotfix")


def mark_succeeded(deployment: Deployment) -> None:
    # Test setup only: the deploy engine (not under test here) finishes deployments.
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Status.SUCCEEDED, finished_at=timezone.now()
    )


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("seq")
