"""GET /apps/<slug>/metrics/: DORA's four keys as a table and plotly charts."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Deployment
from portal.core.choices import Role
from portal.core.models import Membership
from tests.conftest import env, grant
from tests.environments.ui import browser


def url(catalog, **query) -> str:
    base = reverse("application-metrics", args=[catalog.slug])
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


@pytest.fixture
def history(release, catalog):
    """Two succeeded deployments of 1.4.0 (staging, production) and a failed one."""
    now = timezone.now()
    for slug, status, hours_ago in (("staging", Status.SUCCEEDED, 30), ("production", Status.FAILED,
                                    20), ("production", Status.SUCCEEDED, 18)):  # fmt: skip
        Deployment.objects.create(
            release=release, environment=env(catalog, slug), status=status, reason="history",
            finished_at=now - timedelta(hours=hours_ago),
        )  # fmt: skip


def charts_in(html: str) -> dict[str, dict]:
    found = re.findall(r'<script id="(chart-[a-z-]+-data)" type="application/json">(.*?)</script>',
                       html, re.S)  # fmt: skip
    return {name: json.loads(body) for name, body in found}


def test_it_shows_the_four_keys_per_environment(users, catalog, history):
    response = browser(users["dave"]).get(url(catalog))
    assert response.status_code == 200
    keys = {k.environment.slug: k for k in response.context["keys"]}
    assert list(keys) == ["dev", "staging", "production"]
    assert (keys["production"].deployments, keys["production"].failures) == (1, 1)
    assert keys["production"].restore_time == timedelta(hours=2)
    html = response.content.decode()
    assert '<tr data-environment="production">' in html
    assert "50% <small" in html  # production's change failure rate


def test_it_embeds_the_charts_and_the_local_plotly(users, catalog, history):
    html = browser(users["dave"]).get(url(catalog)).content.decode()
    figures = charts_in(html)
    assert set(figures) == {"chart-frequency-data", "chart-lead-time-data",
                            "chart-failure-rate-data", "chart-restore-data"}  # fmt: skip
    assert [t["name"] for t in figures["chart-frequency-data"]["data"]] == [
        "Development", "Staging", "Production"
    ]  # fmt: skip
    assert '<script src="/static/vendor/plotly.min.js" defer>' in html
    assert '<script src="/static/js/charts.js" defer>' in html
    assert "cdn" not in html.lower()


@pytest.mark.parametrize("days", [7, 30, 90, 365])
def test_it_offers_each_range(users, catalog, history, days):
    response = browser(users["dave"]).get(url(catalog, days=days))
    assert response.status_code == 200
    assert response.context["result"].days == days
    assert f'<option value="{days}" selected>' in response.content.decode()


@pytest.mark.parametrize("days", ["12", "²", "9" * 5000, "", "30.0"])
def test_an_unknown_range_is_explained(users, catalog, days):
    response = browser(users["dave"]).get(url(catalog, days=days))
    assert response.status_code == 400
    assert "Choose a range of 7, 30, 90, 365 days." in response.content.decode()
    assert response.context["result"].days == 30


def test_it_filters_by_environment(users, catalog, history):
    response = browser(users["dave"]).get(url(catalog, environment="production"))
    assert [k.environment.slug for k in response.context["keys"]] == ["production"]


def test_an_unknown_environment_is_explained(users, catalog):
    response = browser(users["dave"]).get(url(catalog, environment="qa"))
    assert response.status_code == 400
    assert "No environment &#x27;qa&#x27; that you may see" in response.content.decode()


def test_it_shows_only_the_environments_the_user_may_see(users, catalog, history):
    grant(users["mallory"], env(catalog, "staging"), Role.VIEWER)
    response = browser(users["mallory"]).get(url(catalog))
    assert response.status_code == 200
    assert [k.environment.slug for k in response.context["keys"]] == ["staging"]
    hidden = browser(users["mallory"]).get(url(catalog, environment="production"))
    assert hidden.status_code == 400  # as if production did not exist


def test_an_outsider_gets_a_404(users, catalog):
    assert browser(users["mallory"]).get(url(catalog)).status_code == 404


def test_an_unknown_application_is_a_404(users, catalog):
    response = browser(users["dave"]).get(reverse("application-metrics", args=["ledger"]))
    assert response.status_code == 404


def test_anonymous_users_are_sent_to_sign_in(client, catalog):
    response = client.get(url(catalog))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_refuses_a_post(users, catalog):
    assert browser(users["dave"]).post(url(catalog)).status_code == 405


def test_the_application_page_links_to_it(users, catalog):
    html = browser(users["dave"]).get(reverse("application-detail", args=[catalog.slug])).content
    assert reverse("application-metrics", args=[catalog.slug]).encode() in html


def test_a_membership_removed_hides_the_page(users, catalog):
    Membership.objects.filter(user=users["dave"]).delete()
    assert browser(users["dave"]).get(url(catalog)).status_code == 404
