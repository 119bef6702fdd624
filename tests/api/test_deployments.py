"""GET|POST /api/v1/deployments/"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Deployment
from environments.choices import FreezeKind
from environments.models import FreezeWindow
from portal.core.models import AuditEvent
from tests.api.conftest import last_event, mark_succeeded, request_deployment
from tests.conftest import env

URL = "/api/v1/deployments/"


def payload(release, slug="staging", reason="Ship the retrained model") -> dict:
    return {
        "release": release.pk,
        "environment": env(release.application, slug).pk,
        "reason": reason,
    }


def test_it_requests_a_deployment(api, release):
    response = api("alice").post(URL, payload(release), format="json")
    assert response.status_code == 201
    body = response.json()
    deployment = Deployment.objects.get(pk=body["id"])
    assert body["status"] == "awaiting_approval" == deployment.status
    assert body["kind"] == "deploy"
    assert body["release"]["id"] == release.pk
    assert body["release"]["version"] == "1.4.0"
    assert body["environment"]["slug"] == "staging"
    assert body["requested_by"] == "alice"
    assert body["required_approvals"] == 1
    assert body["approvals"] == []
    assert deployment.requested_by.username == "alice"
    assert deployment.reason == "Ship the retrained model"
    event = last_event("deployment.requested")
    assert event.actor_name == "alice"
    assert event.target_id == str(deployment.pk)
    assert event.environment_id == deployment.environment_id


def test_it_queues_at_once_where_no_approval_is_needed(api, release):
    body = api("alice").post(URL, payload(release, slug="dev"), format="json").json()
    assert body["status"] == "queued"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"release": "abc"}, "release"),
        ({"release": 999999}, "release"),
        ({"environment": 10**30}, "environment"),
        ({"environment": 999999}, "environment"),
    ],
)
def test_it_names_the_field_of_bad_input_and_writes_nothing(api, release, change, field):
    client = api("alice")
    before = AuditEvent.objects.count()
    response = client.post(URL, {**payload(release), **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Deployment.objects.exists()
    assert AuditEvent.objects.count() == before


def test_it_refuses_production_before_staging_succeeded(api, release):
    response = api("alice").post(URL, payload(release, slug="production"), format="json")
    assert response.status_code == 400
    assert "must first succeed in staging" in response.json()["release"][0]
    assert not Deployment.objects.exists()


def test_it_refuses_a_frozen_environment(api, release):
    staging = env(release.application, "staging")
    FreezeWindow.objects.create(environment=staging, kind=FreezeKind.ONE_OFF, reason="Audit week",
                                starts_at=timezone.now() - timedelta(hours=1),
                                ends_at=timezone.now() + timedelta(hours=1))  # fmt: skip
    response = api("alice").post(URL, payload(release), format="json")
    assert response.status_code == 400
    assert "Audit week" in response.json()["environment"][0]
    assert not Deployment.objects.exists()


def test_it_refuses_a_second_open_request_with_409(api, release, users):
    request_deployment(release, users)
    response = api("alice").post(URL, payload(release), format="json")
    assert response.status_code == 409
    assert Deployment.objects.count() == 1


def test_it_refuses_a_viewer_with_403(api, release):
    response = api("dave").post(URL, payload(release), format="json")
    assert response.status_code == 403
    assert "deployer role" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_it_treats_invisible_objects_as_unknown(api, release):
    response = api("mallory").post(URL, payload(release), format="json")
    assert response.status_code == 400
    assert "release" in response.json()
    assert not Deployment.objects.exists()


def test_it_lists_and_filters_deployments(api, release, users):
    dev = request_deployment(release, users, slug="dev")
    mark_succeeded(dev)
    staging = request_deployment(release, users, slug="staging")
    client = api("dave")
    body = client.get(URL).json()
    assert body["count"] == 2
    assert [d["id"] for d in body["results"]] == [staging.pk, dev.pk]
    body = client.get(URL, {"status": "succeeded"}).json()
    assert [d["id"] for d in body["results"]] == [dev.pk]
    body = client.get(URL, {"environment": staging.environment_id}).json()
    assert [d["id"] for d in body["results"]] == [staging.pk]
    assert client.get(URL, {"status": "awaiting_approval", "environment": dev.environment_id}
                      ).json()["count"] == 0  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"), [({"status": "done"}, "status"), ({"environment": "prod"}, "environment")]
)
def test_it_names_a_bad_filter(api, catalog, params, field):
    response = api("dave").get(URL, params)
    assert response.status_code == 400
    assert field in response.json()


def test_it_hides_deployments_from_outsiders(api, release, users):
    request_deployment(release, users)
    assert api("mallory").get(URL).json()["count"] == 0


def test_it_refuses_anonymous_callers(anonymous, release):
    assert anonymous.get(URL).status_code == 401
    assert anonymous.post(URL, payload(release), format="json").status_code == 401
    assert not Deployment.objects.exists()


def test_it_refuses_other_methods(api, release):
    assert api("alice").delete(URL).status_code == 405
