"""The evidence pack and the delivery metrics in a real browser (chromium)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from deployments.choices import Status
from deployments.evidence import build_pack
from deployments.models import Deployment, Release
from tests.browser.conftest import screenshot
from tests.browser.test_approval_flow import sign_in
from tests.conftest import env
from tests.deployments.history import PLAN_SHA, alarm_history, shipped

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def test_it_opens_the_evidence_pack(page: Page, release, users):
    deployment = shipped(release, users)
    alarm_history(deployment)
    log_sha256 = build_pack(deployment)["log"]["sha256"]
    sign_in(page, "dave")
    page.goto(f"/deployments/{deployment.pk}/")
    expect(page.get_by_test_id("timeline")).to_contain_text("Approved")
    page.get_by_test_id("evidence-html").click()
    page.wait_for_url(f"**/deployments/{deployment.pk}/evidence.html")
    expect(page.get_by_test_id("plan-sha256")).to_have_text(PLAN_SHA)
    expect(page.get_by_test_id("log-sha256")).to_have_text(log_sha256)
    approvals = page.get_by_test_id("approvals")
    expect(approvals).to_contain_text("bob@example.com")
    expect(approvals).to_contain_text("carol@example.com")
    expect(approvals).to_contain_text(deployment.approval_digest())
    expect(page.get_by_test_id("alarms")).to_contain_text("HighErrorRate")
    expect(page.get_by_test_id("verification")).to_contain_text("match their signatures")
    # Nothing but the page itself was fetched: the pack is self-contained.
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0
    screenshot(page, "evidence-pack")


def test_it_draws_the_delivery_metrics_charts(page: Page, release, catalog):
    now = timezone.now()
    Release.objects.filter(pk=release.pk).update(created_at=now - timedelta(hours=60))
    for hours_ago, status in ((50, Status.SUCCEEDED), (30, Status.FAILED), (26, Status.SUCCEEDED)):
        Deployment.objects.create(
            release=release, environment=env(catalog, "production"), status=status,
            reason="history", finished_at=now - timedelta(hours=hours_ago),
        )  # fmt: skip
    sign_in(page, "dave")
    page.goto(f"/apps/{catalog.slug}/")
    page.get_by_role("link", name="Delivery metrics").click()
    page.wait_for_url(f"**/apps/{catalog.slug}/metrics/")
    for chart in ("chart-frequency", "chart-lead-time", "chart-failure-rate", "chart-restore"):
        container = page.get_by_test_id(chart)
        expect(container).to_have_attribute("data-rendered", "true")
        expect(container.locator(".main-svg").first).to_be_visible()
    expect(page.get_by_test_id("chart-frequency")).to_contain_text("Production")
    page.select_option("select[name=days]", "7")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/metrics/?days=7*")
    expect(page.get_by_test_id("chart-frequency")).to_have_attribute("data-rendered", "true")
    screenshot(page, "delivery-metrics")
