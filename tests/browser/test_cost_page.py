"""The cost page in a real browser: the demo's spend (queued in moto's Cost
Explorer by the sandbox, fetched by the cost job) drawn by the local plotly.js."""

from __future__ import annotations

from decimal import Decimal

import pytest
from moto.ce.models import ce_backends
from playwright.sync_api import Page, expect

from deployments import sandbox
from deployments.models import CostEstimate, Deployment
from environments.costs import fetch_costs
from tests.browser.conftest import screenshot
from tests.conftest import env
from tests.environments.ui import succeed
from tests.runners.conftest import moto_endpoint  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

PASSWORD = "correct-horse-battery"  # the `users` fixture's password


@pytest.fixture
def demo_spend(moto_endpoint, monkeypatch, catalog, release, users):  # noqa: F811
    """Sixty days of the demo's spend, and an estimate of what runs in production."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    ce_backends.reset()
    sandbox.seed_cost_explorer(moto_endpoint, sandbox.DEMO_MONTHLY_SPEND)
    for environment in catalog.environments.all():
        environment.monthly_budget_usd = {"dev": 50, "staging": 90, "production": 185}[
            environment.slug
        ]
        environment.save()
    fetch_costs(days=60)
    succeed(Deployment.request(release, env(catalog, "staging"), users["alice"], "soak test"))
    production = env(catalog, "production")
    deployment = succeed(Deployment.request(release, production, users["alice"], "CAB-2291"))
    CostEstimate.objects.create(
        deployment=deployment,
        region="ca-central-1",
        monthly_total_usd=Decimal("178.40"),
        previous_monthly_usd=Decimal("178.40"),
        catalog_version="test",
        resources=[
            {"address": "aws_nat_gateway.main", "type": "aws_nat_gateway", "monthly_usd": 32.85},
            {"address": "aws_db_instance.main", "type": "aws_db_instance", "monthly_usd": 29.2},
            {"address": "aws_lb.main", "type": "aws_lb", "monthly_usd": 16.43},
        ],
    )
    return catalog


def test_it_renders_the_cost_charts(demo_spend, page: Page):
    # demo_spend first: the cost job broadcasts, which it can't on Playwright's loop.
    page.goto("/login/")
    page.fill("input[name=username]", "dave")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    page.goto("/apps/fraud-detector/")
    page.get_by_role("link", name="Costs").click()
    for name in ("daily", "budget", "drift", "resources"):
        expect(page.get_by_test_id(f"chart-{name}")).to_have_attribute("data-rendered", "true")
    assert page.locator(".js-plotly-plot .main-svg").count() >= 4
    # Plotly keeps each chart's traces on its element: one stacked bar per environment.
    traces = page.evaluate(
        "() => Object.fromEntries(['daily', 'budget', 'drift', 'resources'].map("
        "n => [n, document.getElementById('cost-' + n).data.map(t => t.name || '')]))"
    )
    assert traces["daily"] == ["Development", "Staging", "Production"]
    assert traces["budget"] == ["Month to date", "Forecast (run-rate)", "Budget"]
    assert len(traces["drift"]) == 2 and len(traces["resources"]) == 1
    assert page.locator("#cost-daily .barlayer .trace").count() == 3
    expect(page.get_by_test_id("costs-production")).to_contain_text("$185.00")
    screenshot(page, "cost-page-30-days")

    page.get_by_role("link", name="90 days").click()
    expect(page.get_by_test_id("chart-daily")).to_have_attribute("data-rendered", "true")
    days = page.evaluate("() => document.getElementById('cost-daily').data[0].x.length")
    assert days == 60
    screenshot(page, "cost-page-90-days")
