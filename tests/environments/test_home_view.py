"""The catalog (/apps/): applications the user may see, environments in promotion order."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from environments.choices import FreezeKind
from environments.models import Application, Environment, FreezeWindow, Service
from tests.conftest import env, grant
from tests.environments.ui import browser


def test_it_lists_applications_with_environments_in_order(users, catalog):
    response = browser(users["alice"]).get(reverse("catalog"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Fraud Detector" in html
    assert html.index("Development") < html.index("Staging") < html.index("Production")
    assert reverse("environment-detail", args=["fraud-detector", "production"]) in html


def test_it_hides_applications_and_environments_without_a_role(catalog, users):
    ledger = Application.objects.create(slug="ledger", name="Ledger")
    Environment.objects.create(application=ledger, slug="production", name="Ledger prod", order=1)
    only_dev = browser(users["mallory"])
    grant(users["mallory"], env(catalog, "dev"), "viewer")
    html = only_dev.get(reverse("catalog")).content.decode()
    assert "Ledger" not in html
    assert "Development" in html
    assert "Production" not in html


def test_it_shows_an_empty_state_to_outsiders(users, catalog):
    html = browser(users["mallory"]).get(reverse("catalog")).content.decode()
    assert "Fraud Detector" not in html
    assert "no role in any environment" in html


def test_it_marks_frozen_environments(users, catalog):
    now = timezone.now()
    FreezeWindow.objects.create(environment=env(catalog, "production"), kind=FreezeKind.ONE_OFF,
                                reason="Month-end close", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=5))  # fmt: skip
    html = browser(users["alice"]).get(reverse("catalog")).content.decode()
    assert "frozen" in html


def test_it_keeps_a_constant_number_of_queries(catalog, users,
                                               django_assert_max_num_queries):  # fmt: skip
    client = browser(users["alice"])
    with django_assert_max_num_queries(6):
        client.get(reverse("catalog"))
    for n in range(5):
        app = Application.objects.create(slug=f"app-{n}", name=f"App {n}")
        Service.objects.create(application=app, slug="api", name="api")
        for order in (1, 2, 3):
            grant(
                users["alice"],
                Environment.objects.create(
                    application=app, slug=f"env-{order}", name=f"Env {order}", order=order
                ),
                "viewer",
            )
    with django_assert_max_num_queries(6):
        response = client.get(reverse("catalog"))
    assert "App 4" in response.content.decode()


def test_it_refuses_post(users, catalog):
    assert browser(users["alice"]).post(reverse("catalog")).status_code == 405


def test_it_needs_sign_in(client, catalog):
    response = client.get(reverse("catalog"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
