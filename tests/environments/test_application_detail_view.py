"""An application: what runs where, and each environment's protection rules."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment, Release
from environments.choices import FreezeKind
from environments.models import Application, Environment, FreezeWindow
from tests.conftest import env, image
from tests.environments.ui import browser, succeed  # noqa: F401

URL = reverse("application-detail", args=["fraud-detector"])
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def deploy(release, slug, users, when=None):
    deployment = Deployment.request(release, env(release.application, slug), users["alice"], "go")
    return succeed(deployment, when)


def test_it_shows_the_release_each_service_runs(release, users, catalog):
    old = Release.register(catalog, "1.3.0", {s: image(s, "b") for s in SERVICES}, users["alice"])
    deploy(old, "dev", users, timezone.now() - timedelta(days=1))
    deploy(release, "dev", users)
    deploy(old, "staging", users)
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    running = dict((env_.slug, artifact) for env_, artifact in response.context["running"][0][1])
    assert running["dev"].release_id == release.pk
    assert running["staging"].release_id == old.pk
    assert running["production"] is None
    html = response.content.decode()
    assert "nothing deployed" in html
    assert "1.4.0" in html and "1.3.0" in html


def test_it_shows_the_protection_rules(users, catalog):
    production = env(catalog, "production")
    production.approver_group = Group.objects.get(name="risk")
    production.save()
    now = timezone.now()
    FreezeWindow.objects.create(environment=production, kind=FreezeKind.ONE_OFF,
                                reason="Month-end close", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=5))  # fmt: skip
    html = browser(users["dave"]).get(URL).content.decode()
    assert "<strong>2</strong> approvals needed, from group <strong>risk</strong>" in html
    assert "Must first succeed in the previous environment" in html
    assert "Requests expire after 24 h" in html
    assert "Frozen until" in html and "(Month-end close)" in html


def test_it_offers_registration_to_deployers_only(users, catalog):
    link = reverse("release-new", args=["fraud-detector"])
    assert link in browser(users["alice"]).get(URL).content.decode()
    assert link not in browser(users["dave"]).get(URL).content.decode()


def test_it_hides_applications_without_a_role(users, catalog):
    assert browser(users["mallory"]).get(URL).status_code == 404
    Application.objects.create(slug="ledger", name="Ledger")
    assert (
        browser(users["alice"]).get(reverse("application-detail", args=["ledger"])).status_code
        == 404
    )


def test_it_keeps_a_constant_number_of_queries(release, users, catalog,
                                               django_assert_max_num_queries):  # fmt: skip
    client = browser(users["alice"])
    with django_assert_max_num_queries(9):
        client.get(URL)
    for n in range(4):
        extra = Release.register(catalog, f"2.{n}", {s: image(s, "c") for s in SERVICES},
                                 users["alice"])  # fmt: skip
        deploy(extra, "dev", users)
        deploy(extra, "staging", users)
    Environment.objects.create(application=catalog, slug="dr", name="Disaster recovery", order=4)
    with django_assert_max_num_queries(9):
        response = client.get(URL)
    assert "2.3" in response.content.decode()


def test_it_refuses_post(users, catalog):
    assert browser(users["alice"]).post(URL).status_code == 405


def test_it_needs_sign_in(client, catalog):
    assert client.get(URL)["Location"].startswith(reverse("login"))
