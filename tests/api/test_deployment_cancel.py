"""POST /api/v1/deployments/<id>/cancel/"""

from __future__ import annotations

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
