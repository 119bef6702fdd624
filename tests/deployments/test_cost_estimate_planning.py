"""Cost estimates from planning to the approval page.

The plan job runs for real (RQ on Redis, an in-process burst worker, the real
terraform binary with the sandbox's null provider): its null_resources are
free, so that estimate is $0.00 with every line accounted for. The approval
page is shown with the estimate of seed 002's production plan, changed from
one NAT gateway to two (the seed's "Single NAT Gateway" saving, undone).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from deployments.choices import Status
from deployments.models import CostEstimate, Deployment, LogLine
from environments.models import Step
from environments.pricing import estimate_plan
from portal.core.models import AuditEvent
from tests.browser.conftest import browser, page, screenshot  # noqa: F401
from tests.conftest import env, work
from tests.environments.ui import browser as signed_in
from tests.runners.conftest import terraform_cli_config  # noqa: F401

MODULE = str(Path(settings.BASE_DIR) / "infra" / "terraform" / "fraud-detector")
FIXTURE = Path(__file__).resolve().parents[2] / "infra" / "plans" / "seed002-production.json"
SECOND_NAT = ("aws_nat_gateway.main[1]", "aws_eip.nat[1]")


@pytest.fixture
def staging(catalog, monkeypatch, terraform_cli_config, tmp_path, settings):
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(terraform_cli_config))
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    staging = env(catalog, "staging")
    Step.objects.create(environment=staging, order=1, name="Terraform", kind="terraform", config={
        "path": MODULE,
        "variables": {"environment": "${environment}", "release_version": "${release.version}",
                      "images": {"fraud-api": "${artifact.fraud-api}"}},
        "backend_config": {"workspace_dir": str(tmp_path / "state")},
    })  # fmt: skip
    return staging


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_planning_a_deployment_stores_its_estimate(staging, release, users, queues):
    deployment = Deployment.request(release, staging, users["alice"], "ship 1.4.0")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    estimate = CostEstimate.objects.get(deployment=deployment)
    assert estimate.region == "ca-central-1"  # the environment's region
    assert estimate.catalog_version == "aws-on-demand-2026-11-02"
    assert (estimate.monthly_total_usd, estimate.previous_monthly_usd) == (0, 0)
    assert estimate.not_priced == []
    assert {(r["address"], r["note"]) for r in estimate.resources} == {
        ('null_resource.service["fraud-api"]', "no charge (Terraform-internal)"),
        ("null_resource.release", "no charge (Terraform-internal)"),
    }
    planned = AuditEvent.objects.get(action="deployment.planned", target_id=str(deployment.pk))
    assert (planned.after["monthly_cost_usd"], planned.after["cost_delta_usd"]) == ("0.00", "0.00")
    log = LogLine.objects.filter(deployment=deployment, text__startswith="Estimated cost")
    assert log.get().text == (
        "Estimated cost: $0.00/month in ca-central-1 ($0.00/month against what runs now; "
        "0 resource(s) not priced)."
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_region_without_prices_still_plans_and_says_why(staging, release, users, queues):
    staging.region = "eu-south-2"
    staging.save(update_fields=["region"])
    deployment = Deployment.request(release, staging, users["alice"], "ship 1.4.0")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    assert not CostEstimate.objects.filter(deployment=deployment).exists()
    html = signed_in(users["bob"]).get(url(deployment)).content.decode()
    assert "A Terraform step has no cost estimate: No prices for region &#x27;eu-south-2&#x27;" in (
        html
    )


# -- the approval page ------------------------------------------------------------


def second_nat_plan() -> dict:
    """Seed 002's production plan as a change to a running stack with one NAT
    gateway: everything else is a no-op, the second NAT gateway and its EIP are new."""
    document = json.loads(FIXTURE.read_text())
    for change in document["resource_changes"]:
        body = change["change"]
        if change["address"] not in SECOND_NAT:
            body["actions"], body["before"] = ["no-op"], copy.deepcopy(body["after"])
            body["after_unknown"] = {}
    return document


@pytest.fixture
def priced(release, users, catalog) -> Deployment:
    # Staging has no Terraform step here, so the request awaits approval at once;
    # the estimate is stored as the plan job stores it (planning is tested above).
    deployment = Deployment.request(release, env(catalog, "staging"), users["alice"], "second NAT")
    cost = estimate_plan(second_nat_plan(), "us-east-1").as_json()
    CostEstimate.objects.create(
        deployment=deployment, region=cost["region"], catalog_version=cost["catalog_version"],
        monthly_total_usd=cost["monthly_total_usd"],
        previous_monthly_usd=cost["previous_monthly_usd"],
        resources=cost["resources"], not_priced=[
            {"address": "aws_dynamodb_table.events", "type": "aws_dynamodb_table",
             "reason": "aws_dynamodb_table is not in the price catalog"}],
    )  # fmt: skip
    return deployment


def url(deployment: Deployment) -> str:
    return reverse("deployment-detail", args=[deployment.pk])


def test_the_approval_page_shows_the_cost_and_its_delta(users, priced):
    response = signed_in(users["bob"]).get(url(priced))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="cost-total">$207.13/month<' in html
    assert 'data-testid="cost-delta">+$36.95/month<' in html  # 33.30 + 3.65
    assert "against what runs now ($170.18/month)" in html
    changes = [c["line"] for c in response.context["cost"]["changes"]]
    assert changes == [
        "+$33.30/month: aws_nat_gateway.main[1]",
        "+$3.65/month: aws_eip.nat[1]",
    ]
    assert ">+$33.30/month: aws_nat_gateway.main[1]</li>" in html
    assert "aws_dynamodb_table is not in the price catalog" in html
    assert 'data-testid="usage-assumed"' in html
    assert "10 GB a month (default usage)" in html
    assert "Per resource (15 priced, 27 at no charge)" in html
    # The approver sees the cost before the decision form.
    assert html.index('data-testid="cost-estimate"') < html.index('data-testid="decision-form"')


def test_the_viewer_sees_the_cost_too(users, priced):
    response = signed_in(users["dave"]).get(url(priced))
    assert response.status_code == 200
    assert "+$33.30/month: aws_nat_gateway.main[1]" in response.content.decode()


def test_a_deployment_without_a_plan_shows_no_cost_panel(users, release, catalog):
    deployment = Deployment.request(release, env(catalog, "staging"), users["alice"], "go")
    html = signed_in(users["bob"]).get(url(deployment)).content.decode()
    assert 'data-testid="cost-estimate"' not in html


def test_an_outsider_gets_a_404(users, priced):
    assert signed_in(users["mallory"]).get(url(priced)).status_code == 404


def test_an_anonymous_visitor_is_sent_to_sign_in(client, priced):
    response = client.get(url(priced))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_an_approver_sees_the_cost_delta_in_a_real_browser(page, priced):
    from playwright.sync_api import expect

    page.goto("/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "correct-horse-battery")
    page.get_by_role("button", name="Sign in").click()
    page.goto(url(priced))
    expect(page.get_by_test_id("cost-delta")).to_have_text("+$36.95/month")
    expect(page.get_by_test_id("cost-change").first).to_have_text(
        "+$33.30/month: aws_nat_gateway.main[1]"
    )
    expect(page.get_by_test_id("cost-not-priced")).to_contain_text("aws_dynamodb_table.events")
    expect(page.get_by_test_id("decision-form")).to_be_visible()
    screenshot(page, "approval-page-cost-estimate")
