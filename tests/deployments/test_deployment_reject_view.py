"""Rejecting a deployment: POST only, with a comment, ends the request."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.choices import Status
from deployments.models import Approval, Deployment
from tests.conftest import env
from tests.environments.ui import browser, last_event, messages_of


@pytest.fixture
def deployment(release, users) -> Deployment:
    return Deployment.request(release, env(release.application, "staging"), users["alice"],
                              "Bedrock timeout fix")  # fmt: skip


def url(deployment) -> str:
    return reverse("deployment-reject", args=[deployment.pk])


def test_it_rejects_and_audits(deployment, users):
    response = browser(users["bob"]).post(url(deployment), {"comment": "Wrong image"}, follow=True)
    assert "Rejected. The deployment is now rejected." in messages_of(response)
    deployment.refresh_from_db()
    assert deployment.status == Status.REJECTED
    assert Approval.objects.get().decision == "reject"
    event = last_event("deployment.rejected")
    assert event.actor_id == users["bob"].pk
    assert event.after["comment"] == "Wrong image"


def test_it_needs_a_comment(users, deployment):
    response = browser(users["bob"]).post(url(deployment), {"comment": ""}, follow=True)
    assert "Say why you reject this deployment." in messages_of(response)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    assert not Approval.objects.exists()


def test_it_is_forbidden_to_deployers_and_viewers(users, deployment):
    for name in ("alice", "dave"):
        assert browser(users[name]).post(url(deployment), {"comment": "no"}).status_code == 403
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL


def test_a_closed_request_is_a_message(deployment, users):
    deployment.cancel(users["alice"])
    response = browser(users["bob"]).post(url(deployment), {"comment": "no"}, follow=True)
    assert any("not awaiting approval" in m for m in messages_of(response))


def test_it_hides_deployments_without_a_role(users, deployment):
    assert browser(users["mallory"]).post(url(deployment), {"comment": "no"}).status_code == 404


def test_it_refuses_get(users, deployment):
    assert browser(users["bob"]).get(url(deployment)).status_code == 405


def test_it_needs_sign_in(client, deployment):
    assert client.post(url(deployment), {"comment": "no"})["Location"].startswith(reverse("login"))
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
