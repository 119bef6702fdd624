"""An environment: rules, freezes, break-glass, what runs now, its deployments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment, Release
from environments.choices import FreezeKind
from environments.models import FreezeOverride, FreezeWindow
from portal.core.models import Membership
from tests.conftest import env, image
from tests.environments.test_environment_rollback_view import ran, two_releases_ran
from tests.environments.ui import browser, succeed  # noqa: F401

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")

URL = reverse("environment-detail", args=["fraud-detector", "production"])
STAGING = reverse("environment-detail", args=["fraud-detector", "staging"])


def freeze(catalog, slug="production", reason="Month-end close"):
    now = timezone.now()
    return FreezeWindow.objects.create(
        environment=env(catalog, slug), kind=FreezeKind.ONE_OFF, reason=reason,
        starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=5),
    )  # fmt: skip


def test_it_shows_rules_and_freeze(users, catalog):
    freeze(catalog)
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<strong>2</strong> approvals needed" in html
    assert "Frozen until" in html and "(Month-end close)" in html
    assert "in force" in html


def test_it_shows_what_runs_now_and_the_deployments(release, users, catalog):
    deployment = succeed(Deployment.request(release, env(catalog, "staging"), users["alice"], "go"))
    html = browser(users["dave"]).get(STAGING).content.decode()
    assert "Runs now" in html
    assert release.artifacts.first().image_ref in html
    assert reverse("deployment-detail", args=[deployment.pk]) in html


def test_what_runs_now_follows_a_rollback(release, users):
    """1.4.0 ran, then 1.5.0, then a rollback brought 1.4.0 back: the page says
    1.4.0 runs now, with its images, in the panel and in the list of releases."""
    first, second = two_releases_ran(release, users, "staging")
    back = Deployment.objects.create(
        release=release, environment=first.environment, requested_by=users["alice"],
        reason="1.5.0 misbehaves", kind="rollback", rollback_of=second,
        status="succeeded", finished_at=timezone.now(),
    )  # fmt: skip
    response = browser(users["dave"]).get(STAGING)
    environment = response.context["environment"]
    assert (environment.current_deployment, environment.current_release) == (back, release)
    assert [(s.release.version, s.runs_now) for s in response.context["succeeded_releases"]] == [
        ("1.4.0", True),
        ("1.5.0", False),
    ]
    html = response.content.decode()
    runs_now = html.split("<h2>Runs now</h2>", 1)[1].split("</section>", 1)[0]
    assert f"#{back.pk}" in runs_now and "1.4.0" in runs_now
    assert all(a.image_ref in runs_now for a in release.artifacts.all())


def test_it_paginates_deployments(release, users, catalog):
    staging = env(catalog, "staging")
    Deployment.objects.bulk_create(
        Deployment(release=release, environment=staging, requested_by=users["alice"],
                   reason=f"r{n}", status="cancelled") for n in range(30)
    )  # fmt: skip
    client = browser(users["dave"])
    first = client.get(STAGING)
    assert len(first.context["page_obj"]) == 25
    assert "Page 1 of 2" in first.content.decode()
    assert len(client.get(STAGING + "?page=2").context["page_obj"]) == 5


def test_it_offers_break_glass_to_admins_only(users, catalog):
    freeze(catalog)
    button = ">Break glass</button>"
    assert button in browser(users["erin"]).get(URL).content.decode()
    assert button not in browser(users["bob"]).get(URL).content.decode()
    assert button not in browser(users["alice"]).get(URL).content.decode()


def test_it_lets_a_second_person_decide_a_pending_override(catalog, users):
    freeze(catalog)
    override = FreezeOverride.request(env(catalog, "production"), users["erin"], "Sev1 fix",
                                      timedelta(hours=1))  # fmt: skip
    decide = reverse("freeze-override-decide", args=[override.pk])
    bob_html = browser(users["bob"]).get(URL).content.decode()
    assert "Sev1 fix" in bob_html and decide in bob_html
    assert decide not in browser(users["erin"]).get(URL).content.decode()  # the requester
    assert decide not in browser(users["alice"]).get(URL).content.decode()  # a deployer


def test_it_hides_environments_without_a_role(catalog, users):
    assert browser(users["mallory"]).get(URL).status_code == 404
    assert (
        browser(users["alice"])
        .get(reverse("environment-detail", args=["fraud-detector", "nope"]))
        .status_code
        == 404
    )


# The rollback page answers 400 where nothing ran yet: there is nothing to roll back to.
@pytest.mark.parametrize(
    "page, shown", [("environment-detail", 200), ("environment-rollback", 400)]
)
def test_a_role_in_a_sibling_environment_does_not_show_it(catalog, users, page, shown):
    """Read by its slugs, then the role check: a role in staging does not show
    production, and a role withdrawn between two requests stops showing it."""
    Membership.objects.filter(user=users["alice"]).exclude(environment__slug="production").delete()
    alice = browser(users["alice"])
    assert alice.get(reverse(page, args=["fraud-detector", "production"])).status_code == shown
    Membership.objects.filter(user=users["alice"]).update(environment=env(catalog, "staging"))
    assert alice.get(reverse(page, args=["fraud-detector", "production"])).status_code == 404
    assert alice.get(reverse(page, args=["fraud-detector", "staging"])).status_code == shown


def test_it_keeps_a_constant_number_of_queries(release, users, catalog):
    client = browser(users["bob"])
    staging = env(catalog, "staging")
    Deployment.objects.create(
        release=release, environment=staging, requested_by=users["alice"], reason="first",
        status="succeeded", finished_at=timezone.now(),
    )  # fmt: skip
    with CaptureQueriesContext(connection) as first:
        client.get(STAGING)
    freeze(catalog, "staging")
    for _ in range(3):
        FreezeOverride.request(env(catalog, "staging"), users["erin"], "why", timedelta(hours=1))
    releases = [release] + [
        Release.register(catalog, f"1.4.{n}", {s: image(s, str(n)) for s in SERVICES},
                         users["alice"])
        for n in range(1, 4)
    ]  # fmt: skip
    Deployment.objects.bulk_create(
        Deployment(release=releases[n % 4], environment=staging, requested_by=users["alice"],
                   reason=f"r{n}", status="succeeded", finished_at=timezone.now())
        for n in range(30)
    )  # fmt: skip
    with CaptureQueriesContext(connection) as again:
        client.get(STAGING)
    # 10 for the page, 2 for the Alarms section (states, recent changes), 2 for
    # the rollback it offers (the last run, the target; what runs now is the
    # first of the releases that succeeded here, the target's run is among
    # them) and 2 for those releases (newest success of each, their marks).
    # The drift panel's row comes with the environment.
    Deployment.objects.bulk_create(
        Deployment(release=releases[n % 4], environment=staging, requested_by=users["alice"],
                   reason=f"more {n}", status="succeeded", finished_at=timezone.now())
        for n in range(60)
    )  # fmt: skip
    with CaptureQueriesContext(connection) as more:
        client.get(STAGING)
    assert len(first) == len(again) == len(more) <= 16


def test_it_refuses_post(users, catalog):
    assert browser(users["erin"]).post(URL).status_code == 405


def test_it_needs_sign_in(client, catalog):
    assert client.get(URL)["Location"].startswith(reverse("login"))


def test_it_offers_roll_back_to_deployers_when_an_earlier_release_ran(release, users, catalog):
    rollback = reverse("environment-rollback", args=["fraud-detector", "production"])
    ran(release, env(catalog, "production"), users["alice"], 3)
    assert rollback not in browser(users["alice"]).get(URL).content.decode()  # nothing earlier
    two_releases_ran(release, users, "production")
    assert rollback in browser(users["alice"]).get(URL).content.decode()
    assert rollback not in browser(users["dave"]).get(URL).content.decode()
