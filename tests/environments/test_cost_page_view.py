"""The cost page of an application: actual spend, budgets, estimate drift."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import CostEstimate, Deployment
from environments import costs
from environments.costs import month_to_date
from environments.models import BudgetAlert, CostSnapshot
from portal.core.choices import Role
from tests.conftest import env, grant
from tests.environments.ui import browser, succeed

URL = reverse("application-costs", args=["fraud-detector"])


def spend(environment, amount: str, days: int = 30, estimated_days: int = 2) -> None:
    """`days` days of spend up to yesterday, as the cost job stores it."""
    yesterday = timezone.now().date() - timedelta(days=1)
    CostSnapshot.objects.bulk_create(
        CostSnapshot(environment=environment, day=yesterday - timedelta(days=back),
                     amount_usd=Decimal(amount), estimated=back < estimated_days)
        for back in range(days)
    )  # fmt: skip


def estimate(release, environment, users, monthly: str) -> CostEstimate:
    """What runs in the environment now, priced at `monthly` per month."""
    deployment = succeed(Deployment.request(release, environment, users["alice"], "go"))
    return CostEstimate.objects.create(
        deployment=deployment, region="ca-central-1", monthly_total_usd=Decimal(monthly),
        previous_monthly_usd=Decimal(0), catalog_version="test", resources=[
            {"address": "aws_db_instance.main", "type": "aws_db_instance", "monthly_usd": 29.2},
            {"address": "aws_nat_gateway.main[0]", "type": "aws_nat_gateway",
             "monthly_usd": 32.85},
            {"address": "aws_ecs_service.api", "type": "aws_ecs_service", "monthly_usd": 0},
        ],
    )  # fmt: skip


@pytest.fixture
def spending(catalog, release, users):
    """fraud-detector as seed 002 prices it: ~$185/month production, ~$50 dev."""
    production, dev = env(catalog, "production"), env(catalog, "dev")
    production.monthly_budget_usd = Decimal("185")
    production.save()
    spend(production, "6.1000")
    spend(dev, "1.6500")
    estimate(release, dev, users, "50.00")
    return catalog


def test_it_draws_spend_budget_drift_and_biggest_resources(spending, users):
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    charts = {chart.name: chart.figure for chart in response.context["charts"]}
    daily = charts["daily"]
    assert [trace["name"] for trace in daily["data"]] == ["Development", "Production"]
    assert daily["layout"]["barmode"] == "stack"
    assert daily["data"][1]["y"] == [6.1] * 30
    # The two newest days are Cost Explorer estimates: hatched.
    assert daily["data"][1]["marker"]["pattern"]["shape"][-2:] == ["/", "/"]
    assert [t["name"] for t in charts["budget"]["data"]] == [
        "Month to date", "Forecast (run-rate)", "Budget",
    ]  # fmt: skip
    budget = charts["budget"]["data"][2]
    assert budget["x"] == ["Development", "Production"] and budget["y"] == [None, 185.0]
    # Only dev has an estimate of what runs now: $50 against a $1.65/day run-rate.
    drift = charts["drift"]["data"]
    assert drift[0]["x"] == ["Development"] and drift[0]["y"] == [50.0]
    rows = {row.environment.slug: row for row in response.context["rows"]}
    month = rows["dev"].month
    assert drift[1]["y"] == [float(month.forecast_usd)]
    assert rows["dev"].drift_percent == ((month.forecast_usd - 50) * 2).quantize(Decimal("0.1"))
    resources = charts["resources"]["data"][0]
    assert resources["y"] == ["Development: aws_nat_gateway.main[0]",
                              "Development: aws_db_instance.main"]  # fmt: skip
    html = response.content.decode()
    assert 'src="/static/vendor/plotly.min.js"' in html and "cdn" not in html.lower()
    assert '<script id="cost-daily-figure" type="application/json">' in html
    assert "linear run-rate" in html


def test_it_shows_month_to_date_against_budget_in_the_table(spending, users):
    production = env(spending, "production")
    figures = month_to_date([production])[production.pk]
    BudgetAlert.objects.create(environment=production, month=figures.month, threshold_percent=80,
                               spent_usd=150, forecast_usd=183, budget_usd=185)  # fmt: skip
    response = browser(users["dave"]).get(URL)
    row = response.context["rows"][2]
    assert row.environment.slug == "production"
    assert row.month.spent_usd == Decimal("6.1") * figures.days_reported
    assert [a.threshold_percent for a in row.alerts] == [80]
    html = response.content.decode()
    assert f"${figures.spent_usd}" in html and "$185.00" in html
    assert f"{figures.budget_used_percent}&nbsp;%" in html


def test_it_marks_budgets_at_the_thresholds_the_alerts_use(spending, users, monkeypatch):
    monkeypatch.setattr(costs, "BUDGET_THRESHOLDS", (40, 60))
    production, dev = env(spending, "production"), env(spending, "dev")
    figures = month_to_date([production, dev])
    production.monthly_budget_usd = figures[production.pk].spent_usd * 2  # 50 % used
    dev.monthly_budget_usd = figures[dev.pk].spent_usd  # 100 % used
    for environment in (production, dev):
        environment.save()
    alerts = costs.check_budgets([production, dev])
    assert sorted((a.environment.slug, a.threshold_percent) for a in alerts) == [
        ("dev", 40), ("dev", 60), ("production", 40),
    ]  # fmt: skip

    html = browser(users["dave"]).get(URL).content.decode()
    assert "reaches 40&nbsp;% and 60&nbsp;% of the budget" in html

    def row(slug: str) -> str:
        return re.search(rf'<tr data-testid="costs-{slug}">.*?</tr>', html, re.S).group(0)

    assert '<span class="cost-near">50.0&nbsp;%</span>' in row("production")
    assert '<span class="cost-over">100.0&nbsp;%</span>' in row("dev")
    assert re.findall(r"badge badge-(\w+)", row("dev")) == ["amber", "red"]
    assert re.findall(r"badge badge-(\w+)", row("production")) == ["amber"]


def test_it_shows_the_chosen_range(spending, users):
    production = env(spending, "production")
    old = timezone.now().date() - timedelta(days=60)
    CostSnapshot.objects.create(environment=production, day=old, amount_usd=Decimal("5.9"))
    client = browser(users["dave"])
    by_range = {}
    for query in ("", "?days=90", "?days=9999"):
        response = client.get(URL + query)
        assert response.status_code == 200
        daily = {c.name: c.figure for c in response.context["charts"]}["daily"]
        by_range[query] = (response.context["days"], len(daily["data"][1]["x"]))
    assert by_range == {"": (30, 30), "?days=90": (90, 31), "?days=9999": (30, 30)}


def test_it_shows_empty_states_without_data(catalog, users):
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    assert all(chart.figure is None for chart in response.context["charts"])
    html = response.content.decode()
    assert 'data-testid="empty-daily"' in html and "No spend reported in the last 30 days" in html
    assert 'data-testid="empty-resources"' in html
    assert "no data" in html and "no estimate" in html


def test_it_draws_only_environments_the_user_may_see(spending, users):
    grant(users["mallory"], env(spending, "dev"), Role.VIEWER)
    response = browser(users["mallory"]).get(URL)
    assert response.status_code == 200
    charts = {chart.name: chart.figure for chart in response.context["charts"]}
    assert [trace["name"] for trace in charts["daily"]["data"]] == ["Development"]
    assert charts["budget"]["data"][0]["x"] == ["Development"]
    assert [row.environment.slug for row in response.context["rows"]] == ["dev"]
    assert "Production" not in response.content.decode()


def test_it_is_linked_from_the_application_page(catalog, users):
    page = browser(users["dave"]).get(reverse("application-detail", args=["fraud-detector"]))
    assert URL in page.content.decode()


def test_it_sends_anonymous_users_to_sign_in(catalog, client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_hides_the_application_from_outsiders(spending, users):
    assert browser(users["mallory"]).get(URL).status_code == 404


def test_it_answers_404_for_an_unknown_application(catalog, users):
    url = reverse("application-costs", args=["payments"])
    assert browser(users["erin"]).get(url).status_code == 404


def test_it_only_reads(catalog, users):
    assert browser(users["erin"]).post(URL).status_code == 405
