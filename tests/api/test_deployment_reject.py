"""POST /api/v1/deployments/<id>/reject/"""

from __future__ import annotations

from deployments.models import Approval, Deployment
from tests.api.conftest import last_event, request_deployment


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/reject/"


def test_it_rejects_and_ends_the_request(api, release, users):
    deployment = request_deployment(release, users)
    response = api("bob").post(url(deployment), {"comment": "wrong build"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "rejected"
    assert body["approvals"][0]["decision"] == "reject"
    assert body["approvals"][0]["valid"] is False
    assert Deployment.objects.get(pk=deployment.pk).status == "rejected"
    event = last_event("deployment.rejected")
    assert event.actor_name == "bob"
    assert event.after["comment"] == "wrong build"


def test_it_needs_a_comment(api, release, users):
    deployment = request_deployment(release, users)
    response = api("bob").post(url(deployment), {"comment": "  "}, format="json")
    assert response.status_code == 400
    assert "comment" in response.json()
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"
    assert not Approval.objects.exists()


def test_it_refuses_the_requester_with_403(api, release, users):
    deployment = request_deployment(release, users)
    assert api("alice").post(url(deployment), {"comment": "no"}, format="json").status_code == 403
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"


def test_it_refuses_a_decided_deployment_with_409(api, release, users):
    deployment = request_deployment(release, users)
    deployment.reject(users["bob"], "wrong build")
    response = api("carol").post(url(deployment), {"comment": "also no"}, format="json")
    assert response.status_code == 409
    assert Approval.objects.count() == 1


def test_it_hides_the_deployment_from_outsiders(api, release, users):
    deployment = request_deployment(release, users)
    assert api("mallory").post(url(deployment), {"comment": "x"}, format="json").status_code == 404


def test_it_refuses_anonymous_callers(anonymous, release, users):
    deployment = request_deployment(release, users)
    assert anonymous.post(url(deployment), {"comment": "x"}, format="json").status_code == 401


def test_it_refuses_get(api, release, users):
    deployment = request_deployment(release, users)
    assert api("bob").get(url(deployment)).status_code == 405
