"""Requesting a deployment of a release to one of the user's deployer environments."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Deployment
from environments.choices import FreezeKind
from environments.models import FreezeOverride, FreezeWindow
from tests.conftest import env, grant
from tests.environments.ui import browser, last_event


def url(release) -> str:
    return reverse("deployment-new") + f"?release={release.pk}"


def test_it_offers_the_users_deployer_environments(release, users, catalog):
    grant(users["mallory"], env(catalog, "staging"), "deployer")
    grant(users["mallory"], env(catalog, "dev"), "viewer")
    response = browser(users["mallory"]).get(url(release))
    assert response.status_code == 200
    offered = [e.slug for e in response.context["form"].fields["environment"].queryset]
    assert offered == ["staging"]
    html = response.content.decode()
    assert 'name="reason"' in html
    assert ">Request deployment</button>" in html


def test_it_requests_a_deployment_and_audits_it(release, users, catalog):
    staging = env(catalog, "staging")
    response = browser(users["alice"]).post(url(release), {"environment": staging.pk,
                                                      "reason": "Bedrock timeout fix"})  # fmt: skip
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("deployment-detail", args=[deployment.pk])
    assert deployment.status == Status.AWAITING_APPROVAL
    assert deployment.requested_by == users["alice"]
    event = last_event("deployment.requested")
    assert event.target_id == str(deployment.pk)
    assert event.after["reason"] == "Bedrock timeout fix"
    assert event.request_id == response["X-Request-ID"]


def test_it_says_when_the_environment_is_frozen(users, release, catalog):
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    now = timezone.now()
    FreezeWindow.objects.create(environment=production, kind=FreezeKind.ONE_OFF,
                                reason="Month-end close", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=5))  # fmt: skip
    client = browser(users["alice"])
    assert "Production is frozen until" in client.get(url(release)).content.decode()
    response = client.post(url(release), {"environment": production.pk, "reason": "go"})
    assert response.status_code == 400
    error = response.context["form"].errors["environment"][0]
    assert "fraud-detector/production is frozen until" in error
    assert "(Month-end close)" in error
    assert not Deployment.objects.exists()


def test_it_explains_the_promotion_rule(users, release, catalog):
    production = env(catalog, "production")
    response = browser(users["alice"]).post(url(release), {"environment": production.pk,
                                                      "reason": "go"})  # fmt: skip
    assert response.status_code == 400
    assert "must first succeed in staging" in response.content.decode()
    assert not Deployment.objects.exists()


def test_it_needs_a_reason(users, release, catalog):
    response = browser(users["alice"]).post(url(release), {"environment": env(catalog, "dev").pk,
                                                      "reason": " "})  # fmt: skip
    assert "reason" in response.context["form"].errors
    assert not Deployment.objects.exists()


def test_it_refuses_an_environment_not_offered(release, users, catalog):
    grant(users["mallory"], env(catalog, "staging"), "deployer")
    response = browser(users["mallory"]).post(url(release), {"environment": env(catalog, "dev").pk,
                                                        "reason": "go"})  # fmt: skip
    assert "environment" in response.context["form"].errors
    assert not Deployment.objects.exists()


def test_it_is_forbidden_without_the_deployer_role(users, release, catalog):
    response = browser(users["dave"]).post(url(release), {"environment": env(catalog, "dev").pk,
                                                     "reason": "go"})  # fmt: skip
    assert response.status_code == 403
    assert not Deployment.objects.exists()


def test_it_hides_releases_without_a_role(users, release):
    assert browser(users["mallory"]).get(url(release)).status_code == 404
    assert browser(users["alice"]).get(reverse("deployment-new")).status_code == 404


def test_it_refuses_other_methods(users, release):
    assert browser(users["alice"]).put(url(release)).status_code == 405


def test_it_needs_sign_in(client, release, catalog):
    response = client.post(url(release), {"environment": env(catalog, "dev").pk, "reason": "go"})
    assert response["Location"].startswith(reverse("login"))
    assert not Deployment.objects.exists()


def test_freeze_messages_use_one_time_zone_and_name_an_active_override(users, release, catalog):
    """A window kept in America/Toronto: the page and the refusal both say its
    end in the portal's time zone (UTC here), the same text."""
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    toronto = (
        timezone.now().astimezone(ZoneInfo("America/Toronto")).replace(second=0, microsecond=0)
    )
    starts, ends = toronto - timedelta(hours=1), toronto + timedelta(hours=5)
    FreezeWindow.objects.create(environment=production, kind=FreezeKind.WEEKLY,
                                reason="Month-end close", time_zone="America/Toronto",
                                start_weekday=starts.weekday(), start_time=starts.time(),
                                end_weekday=ends.weekday(), end_time=ends.time())  # fmt: skip
    end = timezone.localtime(ends).strftime("%Y-%m-%d %H:%M UTC")
    client = browser(users["alice"])

    page = client.get(url(release)).content.decode()
    refused = client.post(url(release), {"environment": production.pk, "reason": "go"})

    assert f"frozen until {end}" in page
    assert f"frozen until {end}" in refused.context["form"].errors["environment"][0]
    glass = FreezeOverride.request(production, users["erin"], "INC-1", timedelta(hours=1))
    glass.approve(users["carol"])
    assert f"Break-glass #{glass.pk} is active until" in client.get(url(release)).content.decode()
