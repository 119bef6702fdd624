"""GET /api/v1/deployments/<id>/"""

from __future__ import annotations

from deployments.models import Deployment
from tests.api.conftest import request_deployment


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/"


def test_it_shows_a_deployment_with_its_approvals(api, release, users, catalog):
    production = catalog.environments.get(slug="production")
    production.require_previous_success = False
    production.save()
    deployment = request_deployment(release, users, slug="production")
    deployment.approve(users["bob"], "checked the plan")
    body = api("dave").get(url(deployment)).json()
    assert body["id"] == deployment.pk
    assert body["status"] == "awaiting_approval"
    assert body["kind"] == "deploy"
    assert body["release"] == {"id": release.pk, "version": "1.4.0",
                               "artifacts": release.artifact_map()}  # fmt: skip
    assert body["environment"]["id"] == production.pk
    assert body["environment"]["slug"] == "production"
    assert body["requested_by"] == "alice"
    assert body["reason"] == "hotfix"
    assert body["required_approvals"] == 2
    assert body["approval_digest"] == deployment.approval_digest()
    [approval] = body["approvals"]
    assert approval["user"] == "bob"
    assert approval["decision"] == "approve"
    assert approval["comment"] == "checked the plan"
    assert approval["digest"] == deployment.approval_digest()
    assert approval["valid"] is True
    assert approval["at"]
    assert body["created_at"]
    assert body["queued_at"] is None


def test_it_marks_an_approval_for_another_plan_as_not_valid(api, release, users):
    deployment = request_deployment(release, users)
    deployment.approvals.create(user=users["bob"], decision="approve", digest="0" * 64)
    [approval] = api("dave").get(url(deployment)).json()["approvals"]
    assert approval["valid"] is False


def test_it_hides_a_deployment_from_outsiders(api, release, users):
    deployment = request_deployment(release, users)
    assert api("mallory").get(url(deployment)).status_code == 404


def test_it_refuses_anonymous_callers(anonymous, release, users):
    assert anonymous.get(url(request_deployment(release, users))).status_code == 401


def test_it_refuses_other_methods(api, release, users):
    deployment = request_deployment(release, users)
    client = api("erin")
    assert client.patch(url(deployment), {"status": "queued"}, format="json").status_code == 405
    assert client.delete(url(deployment)).status_code == 405
    assert Deployment.objects.get(pk=deployment.pk).status == "awaiting_approval"
