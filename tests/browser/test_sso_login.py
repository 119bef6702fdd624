"""Sign in with SSO in a real browser, against the real OpenID provider of
tests/oidc.py: the provider's page, back to the dashboard with the roles of
the user's groups, then the groups and the user changed at the provider."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from portal.core import group_roles
from portal.core.choices import Role
from portal.core.models import Membership
from tests.browser.conftest import screenshot
from tests.oidc import TestIdp, free_port, oidc_provider  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

RECHECK_SECONDS = 2


@pytest.fixture
def idp(settings, live_server, oidc_provider) -> TestIdp:
    client_id, secret = oidc_provider.register_client([f"{live_server.url}/login/sso/callback/"])
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = client_id
    settings.OIDC_CLIENT_SECRET = secret
    settings.OIDC_RECHECK_SECONDS = RECHECK_SECONDS
    return oidc_provider


def test_it_signs_in_through_the_provider_and_follows_its_groups(page: Page, idp, catalog):
    group_roles.add_mapping("gantry-deployers", Role.DEPLOYER, application=catalog)
    idp.set_account("sub-olga", preferred_username="olga", email="olga@example.com",
                    groups=["gantry-deployers"])  # fmt: skip

    page.goto("/login/")
    screenshot(page, "sso-1-sign-in-page")
    page.get_by_role("link", name="Sign in with SSO").click()
    # The provider's own sign-in page, on its own origin.
    expect(page.get_by_role("button", name="Sign in at the test IdP")).to_be_visible()
    assert page.url.startswith(idp.issuer)
    page.get_by_label("User name").fill("sub-olga")
    page.get_by_role("button", name="Sign in at the test IdP").click()

    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator(".whoami .username")).to_have_text("olga")
    expect(page.get_by_role("link", name="Production")).to_be_visible()
    screenshot(page, "sso-2-signed-in")
    roles = Membership.objects.filter(user__username="olga")
    assert set(roles.values_list("role", "via_group")) == {("deployer", "gantry-deployers")}
    assert roles.count() == 3

    # Out of the group at the provider: the roles go at the next re-check.
    idp.set_account("sub-olga", preferred_username="olga", groups=[])
    time.sleep(RECHECK_SECONDS + 0.3)
    page.reload()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert not roles.exists()

    # Disabled at the provider: signed out at the next re-check, told why.
    idp.set_account("sub-olga", preferred_username="olga", disabled=True)
    time.sleep(RECHECK_SECONDS + 0.3)
    page.reload()
    expect(page.get_by_text("You were signed out")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with SSO")).to_be_visible()
    screenshot(page, "sso-3-signed-out")
    assert page.url.endswith("/login/")


def test_it_shows_a_clear_page_when_the_provider_is_down(page: Page, settings, db):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "gantry", "secret"
    page.goto("/login/")
    response_status = []
    page.on("response", lambda r: response_status.append(r.status))
    page.get_by_role("link", name="Sign in with SSO").click()
    expect(
        page.get_by_role("heading", name="The identity provider cannot be reached")
    ).to_be_visible()
    expect(page.get_by_test_id("sso-error")).to_contain_text(
        "Gantry cannot reach the identity provider"
    )
    assert 503 in response_status
    screenshot(page, "sso-4-provider-down")
