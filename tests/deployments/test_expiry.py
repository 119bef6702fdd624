"""Requests expire when not approved in time; an expired request cannot be approved."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import Status
from deployments.jobs import expire_stale_requests
from deployments.models import Deployment
from portal.core.models import AuditEvent
from portal.core.roles import PolicyError
from tests.conftest import env


def age(deployment: Deployment, hours: int) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(
        created_at=timezone.now() - timedelta(hours=hours)
    )
    deployment.refresh_from_db()


def test_it_refuses_an_approval_after_the_window_and_expires_the_request(release, users, catalog):
    deployment = Deployment.request(release, env(catalog, "staging"), users["alice"], "fix")
    age(deployment, 25)
    with pytest.raises(PolicyError, match="expired"):
        deployment.approve(users["bob"])
    deployment.refresh_from_db()
    assert deployment.status == Status.EXPIRED
    assert AuditEvent.objects.filter(action="deployment.expired").count() == 1
    assert not deployment.approvals.exists()
    # Again, by another approver, and the housekeeping job after them: still
    # refused, and the request expired once.
    with pytest.raises(PolicyError):
        deployment.approve(users["carol"])
    assert expire_stale_requests() == 0
    assert AuditEvent.objects.filter(action="deployment.expired").count() == 1
    assert not deployment.approvals.exists()


def test_the_housekeeping_job_expires_only_stale_requests(release, users, catalog):
    from deployments.models import Release
    from tests.conftest import image

    stale = Deployment.request(release, env(catalog, "staging"), users["alice"], "old")
    age(stale, 30)
    other = Release.register(
        catalog, "1.4.1", {s: image(s, "b") for s in ("fraud-api", "fraud-ml", "fraud-worker")},
        users["alice"],
    )  # fmt: skip
    fresh = Deployment.request(other, env(catalog, "staging"), users["alice"], "new")
    assert expire_stale_requests() == 1
    assert expire_stale_requests() == 0  # safe to run twice
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, fresh.status) == (Status.EXPIRED, Status.AWAITING_APPROVAL)
