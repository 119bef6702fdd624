"""A plan a policy holds, in a real browser: bob approves and sees it held
by the policy finding; erin, an admin of the environment, overrides it with a
reason and it is queued. The plan is real (terraform, the Rego policies)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from deployments.choices import Status
from deployments.models import Deployment, Release
from tests.browser.conftest import screenshot
from tests.browser.test_approval_flow import sign_in, sign_out
from tests.conftest import image, work
from tests.deployments.test_engine_flow import sandbox_env, staging  # noqa: F401
from tests.deployments.test_plan_policies import RELEASE_POLICY, policies  # noqa: F401
from tests.runners.conftest import demo_aws, moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def test_a_held_plan_is_overridden_by_an_admin_with_a_reason(
    page: Page,
    policies,
    release,
    staging,
    users,
    queues,  # noqa: F811
):
    policies("release_marker", RELEASE_POLICY % {"level": "soft_mandatory"})
    staging.required_approvals = 1
    staging.save()
    deployment = Deployment.request(release, staging, users["alice"], "Timeout fix")
    work(queues)  # the plan job: terraform plan, then the policies

    sign_in(page, "bob")
    page.goto(f"/deployments/{deployment.pk}/")
    panel = page.get_by_test_id("policy-check")
    expect(page.get_by_test_id("policy-outcome")).to_have_text("Override required")
    expect(panel.get_by_test_id("policy-violation")).to_contain_text("null_resource.release")
    expect(panel.get_by_test_id("policy-override-form")).to_have_count(0)  # not an admin
    # The plan's long attribute values wrap inside their panel: the page does
    # not grow wider than the window (the side column once ran off it).
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    # ... and the plan's table stays inside its own panel, not under the side column.
    assert page.evaluate(
        """() => {
            const panel = document.querySelector('[data-testid=plan]').getBoundingClientRect();
            const table = document.querySelector('.plan-changes').getBoundingClientRect();
            return table.right <= panel.right;
        }"""
    )
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Awaiting approval")
    screenshot(page, "policy-override-1-approved-but-held")
    sign_out(page)

    sign_in(page, "erin")
    page.goto(f"/deployments/{deployment.pk}/")
    page.fill("textarea[name=reason]", "Marker change reviewed with risk (CHG-4411)")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Override policy").click()

    expect(page.get_by_test_id("deployment-status")).to_have_text("Queued")
    expect(page.get_by_test_id("policy-override")).to_contain_text("CHG-4411")
    expect(page.get_by_test_id("policy-override")).to_contain_text("erin")
    screenshot(page, "policy-override-2-overridden-and-queued")
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED


BLOCKED_VERSION_POLICY = """
package gantry.policies.bad_release

import rego.v1

import data.gantry.lib.terraform as tf

violations contains {"level": "hard_mandatory", "address": rc.address,
                     "message": "1.4.0 is known to corrupt the ledger; ship a fixed release."} if {
	some rc in tf.changes("null_resource")
	rc.name == "release"
	rc.change.after.triggers.release_version == "1.4.0"
}
"""


def test_a_blocked_plan_is_cancelled_and_a_new_plan_goes_through(
    page: Page,
    policies,
    release,
    staging,
    users,
    queues,
    catalog,  # noqa: F811
):
    policies("bad_release", BLOCKED_VERSION_POLICY)
    staging.required_approvals = 1
    staging.save()
    blocked = Deployment.request(release, staging, users["alice"], "Timeout fix")
    work(queues)

    sign_in(page, "bob")
    page.goto(f"/deployments/{blocked.pk}/")
    expect(page.get_by_test_id("policy-outcome")).to_have_text("Blocked")
    expect(page.get_by_test_id("cannot-approve")).to_contain_text("Policy blocks this plan")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    screenshot(page, "policy-blocked-1-no-approve")
    sign_out(page)

    sign_in(page, "alice")
    page.goto(f"/deployments/{blocked.pk}/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel request").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Cancelled")
    fixed = Release.register(catalog, "1.4.1", {s: image(s, "f") for s in
                                                ("fraud-api", "fraud-ml", "fraud-worker")},
                             users["alice"])  # fmt: skip
    page.goto(f"/deployments/new/?release={fixed.pk}")
    page.select_option("select[name=environment]", str(staging.pk))
    page.fill("textarea[name=reason]", "1.4.1: the ledger fix")
    page.get_by_role("button", name="Request deployment").click()
    expect(page.get_by_test_id("deployment-status")).to_be_visible()
    replanned = Deployment.objects.get(release=fixed)
    work(queues)  # the new plan, judged again
    sign_out(page)

    sign_in(page, "bob")
    page.goto(f"/deployments/{replanned.pk}/")
    expect(page.get_by_test_id("policy-outcome")).to_have_text("Pass")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("deployment-status")).to_have_text("Queued")
    screenshot(page, "policy-blocked-2-new-plan-approved")
