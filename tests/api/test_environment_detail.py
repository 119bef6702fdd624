"""GET /api/v1/environments/<id>/"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from deployments.models import Deployment, Release
from environments.choices import FreezeKind
from environments.models import FreezeWindow
from tests.api.conftest import mark_succeeded, request_deployment
from tests.conftest import env, image


def url(environment) -> str:
    return f"/api/v1/environments/{environment.pk}/"


def test_it_shows_the_policy_and_no_freeze_or_release_at_first(api, catalog):
    production = env(catalog, "production")
    response = api("dave").get(url(production))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == production.pk
    assert body["slug"] == "production"
    assert body["name"] == "Production"
    assert body["application"] == "fraud-detector"
    assert body["order"] == 3
    assert body["tier"] == "production"
    assert body["policy"] == production.policy_snapshot()
    assert body["policy"]["required_approvals"] == 2
    assert body["frozen_until"] is None
    assert body["freeze_reason"] == ""
    assert body["current_release"] is None


def test_it_shows_an_active_freeze(api, catalog):
    production = env(catalog, "production")
    ends = timezone.now() + timedelta(hours=3)
    FreezeWindow.objects.create(environment=production, kind=FreezeKind.ONE_OFF,
                                reason="Quarter-end close", starts_at=timezone.now()
                                - timedelta(hours=1), ends_at=ends)  # fmt: skip
    body = api("dave").get(url(production)).json()
    assert body["freeze_reason"] == "Quarter-end close"
    assert body["frozen_until"].startswith(ends.strftime("%Y-%m-%dT%H:%M"))


def test_it_shows_the_release_of_the_latest_succeeded_deployment(api, catalog, release, users):
    dev = env(catalog, "dev")
    mark_succeeded(request_deployment(release, users, slug="dev"))
    body = api("dave").get(url(dev)).json()
    assert body["current_release"] == {"id": release.pk, "version": "1.4.0"}


def test_it_hides_environments_from_outsiders(api, catalog):
    response = api("mallory").get(url(env(catalog, "dev")))
    assert response.status_code == 404
    assert response.json() == {
        "detail": "No Environment matches the given query.",
        "request_id": response["X-Request-ID"],
    }


def test_it_answers_404_for_an_unknown_id(api, catalog):
    assert api("dave").get("/api/v1/environments/999999/").status_code == 404


def test_it_refuses_anonymous_callers(anonymous, catalog):
    assert anonymous.get(url(env(catalog, "dev"))).status_code == 401


def test_it_refuses_other_methods(api, catalog):
    dev = env(catalog, "dev")
    response = api("erin").patch(url(dev), {"required_approvals": 0}, format="json")
    assert response.status_code == 405
    response = api("erin").delete(url(dev))
    assert response.status_code == 405
    assert catalog.environments.filter(pk=dev.pk).exists()


def test_the_current_release_is_the_latest_succeeded_deployments(api, catalog, release, users):
    dev = env(catalog, "dev")
    services = ("fraud-api", "fraud-ml", "fraud-worker")
    newer = Release.register(catalog, "1.5.0", {s: image(s, "b") for s in services}, users["alice"])
    now = timezone.now()
    # Requested after 1.4.0 but finished before it: 1.4.0 is what runs now.
    for rel, finished, status in [(newer, now - timedelta(hours=2), "succeeded"),
                                  (release, now - timedelta(hours=1), "succeeded"),
                                  (newer, now, "failed")]:  # fmt: skip
        Deployment.objects.create(release=rel, environment=dev, requested_by=users["alice"],
                                  reason="x", status=status, finished_at=finished)  # fmt: skip
    body = api("dave").get(url(dev)).json()
    assert body["current_release"] == {"id": release.pk, "version": "1.4.0"}
