"""Cancelling a request: the requester or an admin, POST only, audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.choices import Status
from deployments.jobs import run_deployment
from deployments.models import Deployment
from tests.conftest import env
from tests.environments.ui import browser, last_event, messages_of


@pytest.fixture
def deployment(release, users) -> Deployment:
    return Deployment.request(release, env(release.application, "staging"), users["alice"],
                              "Bedrock timeout fix")  # fmt: skip


def url(deployment) -> str:
    return reverse("deployment-cancel", args=[deployment.pk])


def test_the_requester_cancels_and_it_is_audited(deployment, users):
    response = browser(users["alice"]).post(url(deployment), {"comment": "Wrong day"}, follow=True)
    assert "Cancelled. The deployment is now cancelled." in messages_of(response)
    deployment.refresh_from_db()
    assert deployment.status == Status.CANCELLED
    assert deployment.error == "Wrong day"
    event = last_event("deployment.cancelled")
    assert event.actor_id == users["alice"].pk
    assert event.before == {"status": Status.AWAITING_APPROVAL}


def test_the_requester_cancels_a_queued_deployment_before_it_starts(release, users):
    queued = Deployment.request(release, env(release.application, "dev"), users["alice"],
                                "Bedrock timeout fix")  # fmt: skip
    assert queued.status == Status.QUEUED  # dev needs no approvals
    browser(users["alice"]).post(url(queued), {"comment": "Wrong build"})
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED
    event = last_event("deployment.cancelled")
    assert event.actor_id == users["alice"].pk
    assert event.before == {"status": Status.QUEUED}
    # The run job enqueued at request time, should a worker pick it up, does nothing.
    assert run_deployment(queued.pk) == "not queued"
    queued.refresh_from_db()
    assert (queued.status, queued.started_at) == (Status.CANCELLED, None)


def test_an_admin_may_cancel(users, deployment):
    browser(users["erin"]).post(url(deployment))
    deployment.refresh_from_db()
    assert deployment.status == Status.CANCELLED


def test_it_is_forbidden_to_others(users, deployment):
    for name in ("bob", "dave"):
        assert browser(users[name]).post(url(deployment)).status_code == 403
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    assert last_event("deployment.cancelled") is None


def test_a_finished_request_is_a_message(deployment, users):
    deployment.reject(users["bob"], "no")
    response = browser(users["alice"]).post(url(deployment), follow=True)
    assert any("cannot be cancelled now" in m for m in messages_of(response))
    deployment.refresh_from_db()
    assert deployment.status == Status.REJECTED


def test_it_hides_deployments_without_a_role(users, deployment):
    assert browser(users["mallory"]).post(url(deployment)).status_code == 404


def test_it_refuses_get(users, deployment):
    assert browser(users["alice"]).get(url(deployment)).status_code == 405
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL


def test_it_needs_sign_in(client, deployment):
    assert client.post(url(deployment))["Location"].startswith(reverse("login"))
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL


def test_cancelling_a_running_deployment_asks_the_job_to_stop(deployment, users):
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.RUNNING)
    response = browser(users["alice"]).post(url(deployment), {"comment": "Bad config"}, follow=True)
    assert "Cancel requested: the run stops within a few seconds." in messages_of(response)
    deployment.refresh_from_db()
    assert deployment.status == Status.RUNNING  # the job finishes it as cancelled
    assert deployment.cancel_requested_at is not None
    event = last_event("deployment.cancel_requested")
    assert event.actor_id == users["alice"].pk
    assert event.after == {"comment": "Bad config"}
