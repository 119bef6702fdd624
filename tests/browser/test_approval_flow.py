"""The four-eyes flow in a real browser: alice requests, bob approves, the
audit page shows both, each under its own name."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from deployments.choices import Status
from deployments.models import Deployment
from portal.core.models import AuditEvent
from tests.browser.conftest import screenshot
from tests.conftest import env

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # WhiteNoise notes that var/static (collectstatic's output) is absent; the
    # live server serves static files from the finders instead.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

PASSWORD = "correct-horse-battery"  # the `users` fixture's password


def sign_in(page: Page, username: str) -> None:
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def audit_row(page: Page, action: str):
    return page.locator("tbody tr").filter(
        has=page.locator("td", has_text=re.compile(f"^{action}$"))
    )


def test_it_takes_a_deployment_from_request_to_approval(page: Page, release, catalog):
    staging = env(catalog, "staging")

    sign_in(page, "alice")
    page.goto(f"/releases/{release.pk}/")
    page.get_by_role("link", name="Request deployment").click()
    page.select_option("select[name=environment]", str(staging.pk))
    page.fill("textarea[name=reason]", "Timeout fix soak test")
    screenshot(page, "approval-flow-1-request")
    page.get_by_role("button", name="Request deployment").click()
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))
    status = page.get_by_test_id("deployment-status")
    expect(status).to_have_text("Awaiting approval")
    deployment = Deployment.objects.get(release=release, environment=staging)
    assert page.url.endswith(f"/deployments/{deployment.pk}/")
    screenshot(page, "approval-flow-2-awaiting-approval")
    sign_out(page)

    sign_in(page, "bob")
    page.goto(f"/deployments/{deployment.pk}/")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.fill("textarea[name=comment]", "Diff and plan checked")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Queued")
    screenshot(page, "approval-flow-3-queued")
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED

    page.goto("/audit/")
    requested, approved = (
        audit_row(page, "deployment.requested"),
        audit_row(page, "deployment.approved"),
    )
    expect(requested).to_have_count(1)
    expect(requested).to_contain_text("alice")
    expect(approved).to_have_count(1)
    expect(approved).to_contain_text("bob")
    screenshot(page, "approval-flow-4-audit")
    events = AuditEvent.objects.filter(
        target_id=str(deployment.pk), target_type="deployments.deployment"
    )
    assert {(e.action, e.actor_name) for e in events} >= {
        ("deployment.requested", "alice"),
        ("deployment.approved", "bob"),
    }


def test_it_sends_an_anonymous_visitor_to_sign_in(page: Page, release):
    page.goto(f"/releases/{release.pk}/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert "/login/" in page.url
