"""Two-factor authentication as a person uses it, in chromium: an approver
sets up an authenticator from the QR page when an approval asks for a fresh
MFA, approves; later, with a stale confirmation, steps up with a code."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlsplit

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django_otp.oath import TOTP
from playwright.sync_api import Page, expect

from deployments.choices import Status
from deployments.models import Approval, Deployment
from portal.core import totp
from tests.browser.conftest import screenshot
from tests.browser.test_approval_flow import PASSWORD, sign_in
from tests.conftest import env

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def authenticator_code(secret: str, steps_ahead: int = 0) -> str:
    """What an authenticator app that scanned `secret` shows."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    totp = TOTP(key, 30, 0, 6, 0)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


@pytest.fixture
def waiting(release, catalog, users) -> Deployment:
    staging = env(catalog, "staging")
    staging.approval_mfa_minutes = 15
    staging.save()
    return Deployment.request(release, staging, users["alice"], "Timeout fix")


def test_an_approver_enrols_from_the_approval_page_and_approves(page: Page, waiting):
    sign_in(page, "bob")
    page.goto(f"/deployments/{waiting.pk}/")
    notice = page.get_by_test_id("step-up")
    expect(notice).to_contain_text("needs a strong authentication at most 15 minutes old")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    screenshot(page, "mfa-1-step-up-asked")
    page.get_by_test_id("step-up-link").click()

    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    expect(page.get_by_test_id("totp-qr").locator("svg")).to_be_visible()
    secret = page.get_by_test_id("totp-secret").inner_text()
    screenshot(page, "mfa-2-qr-code")
    page.fill("input[name=code]", authenticator_code(secret))
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    codes = page.get_by_test_id("recovery-codes").locator("li")
    expect(codes).to_have_count(10)
    screenshot(page, "mfa-3-recovery-codes")
    page.get_by_role("link", name="I have stored them — continue").click()

    page.wait_for_url(lambda url: urlsplit(url).path == f"/deployments/{waiting.pk}/")
    page.fill("textarea[name=comment]", "Diff checked")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Queued")
    expect(page.get_by_test_id("approval-authentication")).to_contain_text(
        "password + authenticator code (TOTP)"
    )
    screenshot(page, "mfa-4-approved")
    approval = Approval.objects.get(deployment=waiting)
    assert approval.auth_method == "totp"
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED


def test_a_stale_confirmation_is_asked_again_before_approving(page: Page, waiting, users):
    # bob set up his authenticator earlier (the previous time step's code).
    device = totp.start_enrolment(users["bob"])
    secret = totp.secret_base32(device)
    assert totp.confirm_enrolment(users["bob"], authenticator_code(secret, -1)) is not None
    # The sign-in asks for the code after the password.
    page.goto("/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Two-factor sign-in")).to_be_visible()
    page.fill("input[name=code]", authenticator_code(secret))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # Twenty minutes later (the session's confirmation made older than the rule allows).
    cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    session = SessionStore(session_key=cookie["value"])
    session["gantry_authentication"]["at"] -= 20 * 60
    session.save()

    page.goto(f"/deployments/{waiting.pk}/")
    expect(page.get_by_test_id("step-up")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    page.get_by_role("link", name="Confirm with your authenticator").click()
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    screenshot(page, "mfa-5-step-up")
    # Each code is accepted once: the app shows the next one when its 30 s step begins.
    device.refresh_from_db()
    while int(time.time()) // 30 <= device.last_t:
        time.sleep(0.2)
    page.fill("input[name=code]", authenticator_code(secret))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(lambda url: urlsplit(url).path == f"/deployments/{waiting.pk}/")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Queued")
    assert Approval.objects.get(deployment=waiting).auth_method == "totp"
