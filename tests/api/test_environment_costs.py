"""GET /api/v1/environments/<id>/costs/"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from deployments.models import CostEstimate
from environments.costs import month_to_date
from environments.models import BudgetAlert, CostSnapshot
from tests.api.conftest import mark_succeeded, request_deployment
from tests.conftest import env


def url(environment) -> str:
    return f"/api/v1/environments/{environment.pk}/costs/"


def spend(environment, amount: str, days: int) -> None:
    """`days` days of spend up to yesterday; the newest day still estimated."""
    yesterday = timezone.now().date() - timedelta(days=1)
    for back in range(days):
        CostSnapshot.objects.create(environment=environment, day=yesterday - timedelta(days=back),
                                    amount_usd=Decimal(amount), estimated=back == 0)  # fmt: skip


def test_it_reports_month_to_date_forecast_budget_and_daily_figures(api, catalog):
    production = env(catalog, "production")
    production.monthly_budget_usd = Decimal("185")
    production.save()
    spend(production, "6.1000", 40)
    figures = month_to_date([production])[production.pk]
    alert = BudgetAlert.objects.create(environment=production, month=figures.month,
                                       threshold_percent=80, spent_usd=Decimal("148.00"),
                                       forecast_usd=Decimal("183.00"),
                                       budget_usd=Decimal("185"))  # fmt: skip

    response = api("dave").get(url(production))

    assert response.status_code == 200
    body = response.json()
    assert body["currency"] == "USD"
    assert body["month"] == figures.month.isoformat()
    spent = Decimal("6.1") * figures.days_reported
    assert Decimal(body["month_to_date_usd"]) == spent
    assert body["forecast_usd"] == str(figures.forecast_usd)
    assert body["budget_usd"] == "185.00"
    assert body["budget_used_percent"] == str((spent * 100 / 185).quantize(Decimal("0.1")))
    assert body["estimate_monthly_usd"] is None
    # Thirty days by default, oldest first; only yesterday still estimated.
    assert len(body["daily"]) == 30
    assert body["daily"][-1] == {
        "day": (timezone.now().date() - timedelta(days=1)).isoformat(),
        "amount_usd": "6.1000",
        "estimated": True,
    }
    assert not any(day["estimated"] for day in body["daily"][:-1])
    assert body["alerts"] == [{
        "month": figures.month.isoformat(), "threshold_percent": 80, "spent_usd": "148.00",
        "forecast_usd": "183.00", "budget_usd": "185.00",
        "created_at": body["alerts"][0]["created_at"],
    }]  # fmt: skip
    assert body["alerts"][0]["created_at"].startswith(f"{alert.created_at:%Y-%m-%dT%H:%M}")


def test_it_takes_a_range_of_days(api, catalog):
    staging = env(catalog, "staging")
    spend(staging, "1.8000", 100)
    assert len(api("dave").get(url(staging), {"days": 90}).json()["daily"]) == 90
    response = api("dave").get(url(staging), {"days": "ninety"})
    assert response.status_code == 400
    assert response.json() == {
        "days": ["A valid integer is required."],
        "detail": "days: A valid integer is required.",
        "request_id": response["X-Request-ID"],
    }


def test_it_gives_the_estimate_of_what_runs_now(api, catalog, release, users):
    dev = env(catalog, "dev")
    deployment = request_deployment(release, users, "dev")
    mark_succeeded(deployment)
    CostEstimate.objects.create(
        deployment=deployment,
        region="ca-central-1",
        monthly_total_usd=Decimal("49.75"),
        previous_monthly_usd=Decimal(0),
        catalog_version="test",
    )
    body = api("alice").get(url(dev)).json()
    assert body["estimate_monthly_usd"] == "49.75"
    # No spend yet: zero so far, no forecast, no budget set.
    assert (body["month_to_date_usd"], body["forecast_usd"]) == ("0.00", None)
    assert (body["budget_usd"], body["budget_used_percent"], body["daily"]) == (None, None, [])


def test_it_hides_environments_without_a_role(api, catalog):
    assert api("mallory").get(url(env(catalog, "production"))).status_code == 404


def test_it_refuses_anonymous_callers(anonymous, catalog):
    assert anonymous.get(url(env(catalog, "production"))).status_code == 401


def test_it_only_reads(api, catalog):
    assert api("erin").post(url(env(catalog, "production")), {}).status_code == 405


def test_it_is_described_in_the_openapi_schema(api):
    document = api("dave").get("/api/v1/schema/").json()
    operation = document["paths"]["/api/v1/environments/{id}/costs/"]["get"]
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["days"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/EnvironmentCosts"}
    fields = document["components"]["schemas"]["EnvironmentCosts"]["properties"]
    assert {"month_to_date_usd", "forecast_usd", "budget_usd", "budget_used_percent",
            "estimate_monthly_usd", "daily", "alerts"} <= set(fields)  # fmt: skip
