"""POST /api/v1/deployments/<id>/approve/"""

from __future__ import annotations

from deployments.models import Approval
from portal.core.models import AuditEvent
from tests.api.conftest import last_event, request_deployment
from tests.conftest import grant


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/approve/"


def test_it_approves_and_queues_at_the_required_count(api, release, users):
    deployment = request_deployment(release, users)
    response = api("bob").post(url(deployment), {"comment": "plan reviewed"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == deployment.pk
    assert body["status"] == "queued"
    [approval] = body["approvals"]
    assert approval["user"] == "bob"
    assert approval["valid"] is True
    saved = Approval.objects.get(deployment=deployment)
    assert saved.comment == "plan reviewed"
    assert saved.digest == deployment.approval_digest()
    event = last_event("deployment.approved")
    assert event.actor_name == "bob"
    assert event.after["digest"] == saved.digest
    assert last_event("deployment.queued").actor_name == "bob"


def test_it_refuses_self_approval_with_403(api, release, users, catalog):
    grant(users["alice"], catalog.environments.get(slug="staging"), "approver")
    deployment = request_deployment(release, users)
    client = api("alice")
    before = AuditEvent.objects.count()
    response = client.post(url(deployment), {"comment": "mine"}, format="json")
    assert response.status_code == 403
    assert "someone else" in response.json()["detail"]
    assert not Approval.objects.exists()
    assert AuditEvent.objects.count() == before


def test_it_refuses_a_viewer_with_403(api, release, users):
    deployment = request_deployment(release, users)
    assert api("dave").post(url(deployment), {}, format="json").status_code == 403
    assert not Approval.objects.exists()


def test_it_hides_the_deployment_from_outsiders(api, release, users):
    deployment = request_deployment(release, users)
    assert api("mallory").post(url(deployment), {}, format="json").status_code == 404
    assert not Approval.objects.exists()


def test_it_refuses_a_decided_deployment_with_409(api, release, users):
    deployment = request_deployment(release, users)
    deployment.approve(users["bob"])
    response = api("carol").post(url(deployment), {}, format="json")
    assert response.status_code == 409
    assert "not awaiting approval" in response.json()["detail"]
    assert Approval.objects.count() == 1


def test_it_names_a_bad_comment(api, release, users):
    deployment = request_deployment(release, users)
    response = api("bob").post(url(deployment), {"comment": ["a", "list"]}, format="json")
    assert response.status_code == 400
    assert "comment" in response.json()
    assert not Approval.objects.exists()


def test_it_refuses_anonymous_callers(anonymous, release, users):
    deployment = request_deployment(release, users)
    assert anonymous.post(url(deployment), {}, format="json").status_code == 401
    assert not Approval.objects.exists()


def test_it_refuses_get(api, release, users):
    deployment = request_deployment(release, users)
    assert api("bob").get(url(deployment)).status_code == 405
    assert not Approval.objects.exists()
