"""POST /api/v1/deployments/<id>/cancel/"""

from __future__ import annotations

from deployments.jobs import run_deployment
from deployments.models import Deployment
from tests.api.conftest import last_event, request_deployment


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/cancel/"


def test_the_requester_cancels(api, release, users):
    deployment = request_deployment(release, users)
    response = api("alice").post(url(deployment), {"comment": "superseded"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    saved = Deployment.objects.get(pk=deployment.pk)
    assert saved.status == "cancelled"
    assert saved.error == "superseded"
    assert saved.finished_at is not None
    event = last_event("deployment.cancelled")
    assert event.actor_name == "alice"
    assert event.before == {"status": "awaiting_approval"}


def test_the_requester_cancels_a_queued_deployment_which_then_never_runs(api, release, users):
    deployment = request_deployment(release, users, slug="dev")  # no approvals: queued at once
    assert deployment.status == "queued"
    response = api("alice").post(url(deployment), {"comment": "wrong build"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    event = last_event("deployment.cancelled")
    assert event.actor_name == "alice"
    assert event.before == {"status": "queued"}
    # The run job enqueued at request time, should a worker pick it up, does nothing.
    assert run_deployment(deployment.pk) == "not queued"
    saved = Deployment.objects.get(pk=deployment.pk)
    assert (saved.status, saved.started_at) == ("cancelled", None)
    assert not saved.step_runs.exists()


def test_an_admin_cancels(api, release, users):
    deployment = request_deployment(release, users)
    assert api("erin").post(url(deployment), {}, format="json").json()["status"] == "cancelled"


def test_it_refuses_an_approver_with_403(api, release, users):
    deployment = request_deployment(release, users)
    response = api("bob").post(url(deployment), {}, format="json")
    assert response.status_code == 403
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"


def test_it_refuses_a_finished_deployment_with_409(api, release, users):
    deployment = request_deployment(release, users)
    deployment.cancel(users["alice"])
    assert api("alice").post(url(deployment), {}, format="json").status_code == 409


def test_it_hides_the_deployment_from_outsiders(api, release, users):
    deployment = request_deployment(release, users)
    assert api("mallory").post(url(deployment), {}, format="json").status_code == 404
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"


def test_it_refuses_anonymous_callers(anonymous, release, users):
    deployment = request_deployment(release, users)
    assert anonymous.post(url(deployment), {}, format="json").status_code == 401


def test_it_refuses_get(api, release, users):
    deployment = request_deployment(release, users)
    assert api("alice").get(url(deployment)).status_code == 405
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"
