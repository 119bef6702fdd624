"""Rolling an environment back: a confirmation page, deployers only, audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from environments.models import Environment
from tests.conftest import env, image
from tests.environments.ui import browser, last_event, messages_of

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def ran(release: Release, environment: Environment, user, hours_ago: float) -> Deployment:
    """A deployment the engine finished successfully `hours_ago` (test setup only)."""
    return Deployment.objects.create(
        release=release, environment=environment, requested_by=user, reason="setup",
        status=Status.SUCCEEDED, finished_at=timezone.now() - timedelta(hours=hours_ago),
    )  # fmt: skip


def two_releases_ran(release: Release, users, slug: str) -> tuple[Deployment, Deployment]:
    """1.4.0 ran first, then 1.5.0 (which runs now)."""
    newer = Release.register(release.application, "1.5.0", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    environment = env(release.application, slug)
    return ran(release, environment, users["alice"], 2), ran(newer, environment, users["alice"], 1)


def url(slug: str = "production") -> str:
    return reverse("environment-rollback", args=["fraud-detector", slug])


@pytest.fixture
def history(release, users) -> tuple[Deployment, Deployment]:
    return two_releases_ran(release, users, "production")


def test_it_shows_what_comes_back_and_what_runs_now(history, users):
    older, current = history
    response = browser(users["alice"]).get(url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "Brings back 1.4.0" in html
    for artifact in older.release.artifacts.all():
        assert artifact.image_ref in html
    assert "<strong>1.5.0</strong>" in html
    assert "Needs 1 approval before it runs" in html  # production's rollback policy
    assert 'name="reason"' in html


def test_it_says_when_no_approval_is_needed(release, users):
    two_releases_ran(release, users, "staging")
    html = browser(users["alice"]).get(url("staging")).content.decode()
    assert "Needs no approval" in html


def test_it_requests_the_rollback_and_audits_it(history, users):
    older, current = history
    response = browser(users["alice"]).post(url(), {"reason": "INC-42 error rate"})
    rollback = Deployment.objects.get(kind=Kind.ROLLBACK)
    assert response.status_code == 302
    assert response["Location"] == reverse("deployment-detail", args=[rollback.pk])
    assert rollback.release_id == older.release_id
    assert rollback.rollback_of_id == current.pk
    assert rollback.requested_by == users["alice"]
    assert rollback.reason == "INC-42 error rate"
    assert rollback.required_approvals == 1
    assert rollback.status == Status.AWAITING_APPROVAL
    event = last_event("deployment.requested")
    assert event.actor_id == users["alice"].pk
    assert event.target_id == str(rollback.pk)
    assert event.after["kind"] == "rollback"
    assert event.after["release"] == "1.4.0"


def test_it_needs_a_reason(history, users):
    response = browser(users["alice"]).post(url(), {"reason": "  "})
    assert response.status_code == 400
    assert response.context["form"].errors["reason"]
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()
    assert last_event("deployment.requested") is None


def test_it_explains_when_there_is_nothing_to_roll_back_to(release, users):
    ran(release, env(release.application, "production"), users["alice"], 1)
    client = browser(users["alice"])
    html = client.get(url()).content.decode()
    assert "there is nothing to roll back to" in html
    assert 'name="reason"' not in html
    response = client.post(url(), {"reason": "try anyway"})
    assert response.status_code == 400
    assert "there is nothing to roll back to" in response.content.decode()
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_a_policy_error_is_shown_not_raised(history, users):
    browser(users["alice"]).post(url(), {"reason": "first"})
    response = browser(users["alice"]).post(url(), {"reason": "again"})
    assert response.status_code == 400
    assert "already has an open request" in response.content.decode()
    assert Deployment.objects.filter(kind=Kind.ROLLBACK).count() == 1
    assert messages_of(response) == []


def test_it_is_forbidden_to_viewers_and_approvers(history, users):
    for name in ("dave", "bob"):
        client = browser(users[name])
        assert client.get(url()).status_code == 403
        assert client.post(url(), {"reason": "no"}).status_code == 403
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_it_hides_environments_without_a_role(history, users):
    assert browser(users["mallory"]).get(url()).status_code == 404
    assert browser(users["mallory"]).post(url(), {"reason": "x"}).status_code == 404


def test_it_refuses_other_methods(history, users):
    assert browser(users["alice"]).put(url()).status_code == 405
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()


def test_it_needs_sign_in(client, history):
    assert client.post(url(), {"reason": "x"})["Location"].startswith(reverse("login"))
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK).exists()
