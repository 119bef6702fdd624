"""Approving a deployment: POST only, by an eligible approver, audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Approval, Deployment
from environments.choices import FreezeKind
from environments.models import FreezeWindow
from portal.core.models import Membership
from tests.conftest import env, grant
from tests.environments.ui import browser, last_event, messages_of


@pytest.fixture
def deployment(release, users) -> Deployment:
    return Deployment.request(release, env(release.application, "staging"), users["alice"],
                              "Bedrock timeout fix")  # fmt: skip


def url(deployment) -> str:
    return reverse("deployment-approve", args=[deployment.pk])


def test_it_approves_queues_and_audits(deployment, users):
    response = browser(users["bob"]).post(url(deployment), {"comment": "Plan checked"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("deployment-detail", args=[deployment.pk])
    assert "Approved. The deployment is now queued." in messages_of(response)
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED
    approval = Approval.objects.get()
    assert (approval.user, approval.comment) == (users["bob"], "Plan checked")
    event = last_event("deployment.approved")
    assert event.actor_id == users["bob"].pk
    assert event.after["digest"] == deployment.approval_digest()
    assert last_event("deployment.queued") is not None


def test_an_approver_of_a_sibling_environment_gets_a_404_and_writes_nothing(
    deployment, users, catalog
):
    """The deployment is read by its key, then the role is checked in its own
    environment: approving in dev is not approving in staging."""
    Membership.objects.filter(user=users["bob"]).exclude(environment__slug="dev").delete()
    digest = deployment.approval_digest()
    for _ in range(2):  # the retry gets the same answer
        response = browser(users["bob"]).post(url(deployment), {"comment": "ok", "digest": digest})
        assert response.status_code == 404
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    assert not Approval.objects.exists()
    assert last_event("deployment.approved") is None


def test_the_requester_may_not_approve(deployment, users, catalog):
    grant(users["alice"], env(catalog, "staging"), "approver")
    response = browser(users["alice"]).post(url(deployment), {"comment": ""})
    assert response.status_code == 403
    assert "someone else must approve" in response.content.decode()
    assert not Approval.objects.exists()


def test_it_is_forbidden_to_viewers(users, deployment):
    assert browser(users["dave"]).post(url(deployment)).status_code == 403
    assert not Approval.objects.exists()
    assert last_event("deployment.approved") is None


def test_a_second_approval_by_the_same_person_is_a_message(release, users, catalog):
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    deployment = Deployment.request(release, production, users["alice"], "go")
    client = browser(users["bob"])
    client.post(url(deployment))
    response = client.post(url(deployment), follow=True)
    assert response.status_code == 200
    assert "You have already decided on this deployment." in messages_of(response)
    assert Approval.objects.count() == 1


def test_a_freeze_keeps_the_request_waiting(users, deployment, catalog):
    now = timezone.now()
    FreezeWindow.objects.create(environment=env(catalog, "staging"), kind=FreezeKind.ONE_OFF,
                                reason="Month-end close", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=5))  # fmt: skip
    response = browser(users["bob"]).post(url(deployment), follow=True)
    assert any("frozen until" in m and "Month-end close" in m for m in messages_of(response))
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    assert not Approval.objects.exists()


def test_a_too_long_comment_is_refused(users, deployment):
    response = browser(users["bob"]).post(url(deployment), {"comment": "x" * 2001}, follow=True)
    assert any(m.startswith("Comment:") for m in messages_of(response))
    assert not Approval.objects.exists()


def test_it_hides_deployments_without_a_role(users, deployment):
    assert browser(users["mallory"]).post(url(deployment)).status_code == 404


def test_it_refuses_get(users, deployment):
    assert browser(users["bob"]).get(url(deployment)).status_code == 405
    assert not Approval.objects.exists()


def test_it_needs_sign_in(client, deployment):
    assert client.post(url(deployment))["Location"].startswith(reverse("login"))
    assert not Approval.objects.exists()
