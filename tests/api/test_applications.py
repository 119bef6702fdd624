"""GET /api/v1/applications/"""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from environments.models import Application, Environment, Service
from tests.conftest import grant

URL = "/api/v1/applications/"


def test_it_lists_applications_with_services_and_environments_in_order(api, catalog):
    response = api("dave").get(URL)
    assert response.status_code == 200
    [app] = response.json()
    assert app["slug"] == "fraud-detector"
    assert app["name"] == "Fraud Detector"
    assert [s["slug"] for s in app["services"]] == ["fraud-api", "fraud-ml", "fraud-worker"]
    assert [e["slug"] for e in app["environments"]] == ["dev", "staging", "production"]
    production = app["environments"][2]
    assert set(production) == {"id", "slug", "name", "order", "tier"}
    assert production["tier"] == "production"
    assert production["id"] == catalog.environments.get(slug="production").pk


def test_it_shows_only_environments_the_user_may_see(api, catalog, users):
    grant(users["mallory"], catalog.environments.get(slug="staging"), "viewer")
    [app] = api("mallory").get(URL).json()
    assert [e["slug"] for e in app["environments"]] == ["staging"]


def test_it_hides_applications_from_outsiders(api, catalog):
    response = api("mallory").get(URL)
    assert response.status_code == 200
    assert response.json() == []


def test_it_keeps_the_query_count_constant(api, catalog, users):
    client = api("erin")
    client.get(URL)  # the token's first use writes last_used_at; measure after it
    with CaptureQueriesContext(connection) as one_app:
        client.get(URL)
    for n in range(3):
        app = Application.objects.create(slug=f"ledger-{n}", name=f"Ledger {n}")
        Service.objects.create(application=app, slug="api", name="api")
        for order, slug in enumerate(["dev", "staging", "production"], start=1):
            grant(users["erin"], Environment.objects.create(
                application=app, slug=slug, name=slug, order=order), "admin")  # fmt: skip
    with CaptureQueriesContext(connection) as four_apps:
        response = client.get(URL)
    assert len(response.json()) == 4
    assert len(four_apps) == len(one_app)


def test_it_refuses_anonymous_callers(anonymous, catalog):
    assert anonymous.get(URL).status_code == 401


def test_it_refuses_other_methods(api, catalog):
    response = api("erin").post(URL, {"slug": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["detail"] == 'Method "POST" not allowed.'
    assert not Application.objects.filter(slug="x").exists()
