"""GET /api/v1/deployments/<id>/evidence/ — the evidence pack for tools."""

from __future__ import annotations

import pytest

from deployments.models import Deployment
from portal.core.models import AuditEvent, Membership
from tests.api.conftest import last_event
from tests.deployments.history import PLAN_SHA, shipped


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.pk}/evidence/"


@pytest.fixture
def deployment(release, users) -> Deployment:
    return shipped(release, users)


def test_it_returns_the_pack(api, deployment):
    response = api("dave").get(url(deployment))
    assert response.status_code == 200
    pack = response.json()
    assert pack["format"] == "gantry-evidence/1"
    assert set(pack) == {
        "format", "generated_at", "deployment", "release", "plan", "cost", "approvals",
        "policy", "policy_check", "steps", "alarms_during_bake", "log", "audit",
    }  # fmt: skip
    assert pack["plan"]["plan_sha256"] == PLAN_SHA
    assert [a["approver"]["username"] for a in pack["approvals"]] == ["bob", "carol"]
    assert pack["audit"]["verification"]["these_events_ok"] is True
    assert len(pack["log"]["sha256"]) == 64


def test_it_matches_the_download_of_the_page(api, users, deployment):
    from django.test import Client

    client = Client()
    client.force_login(users["dave"])
    page = client.get(f"/deployments/{deployment.pk}/evidence.json").json()
    api_pack = api("dave").get(url(deployment)).json()
    for section in ("release", "plan", "approvals", "policy", "steps", "log"):
        assert api_pack[section] == page[section], section


def test_the_export_is_audited(api, deployment):
    pack = api("carol").get(url(deployment)).json()
    event = last_event("evidence.exported")
    assert event.actor_name == "carol"
    assert event.target_id == str(deployment.pk)
    assert event.after == {"format": "api", "log_sha256": pack["log"]["sha256"]}


def test_an_outsider_gets_a_404(api, deployment):
    response = api("mallory").get(url(deployment))
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(action="evidence.exported").exists()


def test_a_member_of_other_environments_only_gets_a_404(api, users, deployment):
    Membership.objects.filter(user=users["dave"], environment=deployment.environment).delete()
    assert api("dave").get(url(deployment)).status_code == 404


def test_anonymous_requests_are_refused(anonymous, deployment):
    assert anonymous.get(url(deployment)).status_code == 401
    assert not AuditEvent.objects.filter(action="evidence.exported").exists()


def test_it_refuses_a_post(api, deployment):
    assert api("dave").post(url(deployment)).status_code == 405


def test_a_head_request_records_no_export(api, deployment):
    assert api("dave").head(url(deployment)).status_code == 405
    assert not AuditEvent.objects.filter(action="evidence.exported").exists()


def test_it_is_in_the_schema(api):
    document = api("dave").get("/api/v1/schema/").json()
    operation = document["paths"]["/api/v1/deployments/{id}/evidence/"]["get"]
    assert "Evidence pack" in operation["summary"]
    # 400: an id beyond bigint; 401/403: the errors every operation shares.
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404"}
