"""POST /api/v1/environments/<id>/rollback/"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from tests.api.conftest import last_event
from tests.conftest import env, image

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def ran(release, environment, user, hours_ago: float) -> Deployment:
    # Test setup only: the deploy engine (not under test here) finishes deployments.
    return Deployment.objects.create(
        release=release, environment=environment, requested_by=user, reason="setup",
        status=Status.SUCCEEDED, finished_at=timezone.now() - timedelta(hours=hours_ago),
    )  # fmt: skip


@pytest.fixture
def history(release, users) -> tuple[Deployment, Deployment]:
    newer = Release.register(release.application, "1.5.0", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    production = env(release.application, "production")
    return ran(release, production, users["alice"], 2), ran(newer, production, users["alice"], 1)


def url(catalog, slug: str = "production") -> str:
    return f"/api/v1/environments/{env(catalog, slug).pk}/rollback/"


def test_it_requests_a_rollback(api, catalog, history, users):
    older, current = history
    response = api("alice").post(url(catalog), {"reason": "INC-42"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "rollback"
    assert body["release"]["version"] == "1.4.0"
    assert body["status"] == "awaiting_approval"
    assert body["required_approvals"] == 1
    assert body["reason"] == "INC-42"
    saved = Deployment.objects.get(pk=body["id"])
    assert saved.kind == Kind.ROLLBACK and saved.rollback_of_id == current.pk
    event = last_event("deployment.requested")
    assert event.actor_name == "alice"
    assert event.target_id == str(saved.pk)
    assert event.after["kind"] == "rollback"


def test_it_queues_at_once_when_the_rollback_needs_no_approval(api, catalog, release, users):
    newer = Release.register(catalog, "1.5.0", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    staging = env(catalog, "staging")
    ran(release, staging, users["alice"], 2)
    ran(newer, staging, users["alice"], 1)
    body = api("alice").post(url(catalog, "staging"), {"reason": "bad"}, format="json").json()
    assert (body["status"], body["required_approvals"]) == ("queued", 0)


def test_it_needs_a_reason(api, catalog, history):
    response = api("alice").post(url(catalog), {"reason": ""}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    response = api("alice").post(url(catalog), {}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_it_refuses_when_nothing_earlier_ran(api, catalog, release, users):
    ran(release, env(catalog, "production"), users["alice"], 1)
    response = api("alice").post(url(catalog), {"reason": "x"}, format="json")
    assert response.status_code == 400
    assert "nothing to roll back to" in response.json()["detail"]
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_a_second_rollback_of_the_same_release_conflicts(api, catalog, history):
    api("alice").post(url(catalog), {"reason": "one"}, format="json")
    assert api("alice").post(url(catalog), {"reason": "two"}, format="json").status_code == 409
    assert Deployment.objects.filter(kind=Kind.ROLLBACK).count() == 1


def test_it_refuses_viewers_and_approvers_with_403(api, catalog, history):
    for name in ("dave", "bob"):
        assert api(name).post(url(catalog), {"reason": "x"}, format="json").status_code == 403
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_it_hides_the_environment_from_outsiders(api, catalog, history):
    assert api("mallory").post(url(catalog), {"reason": "x"}, format="json").status_code == 404


def test_it_refuses_anonymous_callers(anonymous, catalog, history):
    assert anonymous.post(url(catalog), {"reason": "x"}, format="json").status_code == 401


def test_it_refuses_get(api, catalog, history):
    assert api("alice").get(url(catalog)).status_code == 405
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()
