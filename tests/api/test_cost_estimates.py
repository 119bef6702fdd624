"""POST /api/v1/cost-estimates/?region=R"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments import api as deployments_api
from deployments.models import CostEstimate
from portal.core.models import AuditEvent

URL = "/api/v1/cost-estimates/"
FIXTURE = Path(__file__).resolve().parents[2] / "infra" / "plans" / "seed002-production.json"


@pytest.fixture
def seed_plan() -> dict:
    return json.loads(FIXTURE.read_text())


def post(client, body, region: str | None = "us-east-1", **extra):
    url = URL if region is None else f"{URL}?region={region}"
    return client.post(url, body, format="json", **extra)


def test_it_prices_a_plan_for_ci(api, catalog, seed_plan):
    client = api("alice")
    events = AuditEvent.objects.count()
    response = post(client, seed_plan)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["monthly_total_usd"], body["previous_monthly_usd"], body["delta_usd"]) == (
        "207.13", "0.00", "207.13"
    )  # fmt: skip
    assert body["region"] == "us-east-1"
    assert body["catalog_source"] == "AWS Price List API, public on-demand prices"
    assert body["not_priced"] == []
    nat = next(r for r in body["resources"] if r["address"] == "aws_nat_gateway.main[1]")
    assert set(nat) >= {"address", "type", "monthly_usd", "components"}
    assert (nat["type"], nat["monthly_usd"]) == ("aws_nat_gateway", "33.30")
    assert [c["usage_assumed"] for c in nat["components"]] == [False, True]
    # Pricing is a calculation: nothing stored, nothing audited.
    assert CostEstimate.objects.count() == 0
    assert AuditEvent.objects.count() == events


def test_it_lists_what_it_cannot_price(api, catalog):
    plan = {"format_version": "1.2", "resource_changes": [{
        "address": "aws_dynamodb_table.events", "mode": "managed", "type": "aws_dynamodb_table",
        "name": "events", "change": {"actions": ["create"], "before": None, "after": {}},
    }]}  # fmt: skip
    body = post(api("bob"), plan, region="ca-central-1").json()
    assert body["not_priced"] == [
        {
            "address": "aws_dynamodb_table.events",
            "type": "aws_dynamodb_table",
            "reason": "aws_dynamodb_table is not in the price catalog",
        }
    ]
    assert body["monthly_total_usd"] == "0.00"  # fmt: skip


def test_it_accepts_a_session_too(client, users, catalog, seed_plan):
    client.force_login(users["erin"])
    response = client.post(f"{URL}?region=us-east-1", seed_plan, content_type="application/json")
    assert response.status_code == 200


def test_it_names_an_unknown_region(api, catalog, seed_plan):
    response = post(api("alice"), seed_plan, region="mars-north-1")
    assert response.status_code == 400
    assert "mars-north-1" in response.json()["region"][0]
    assert "ca-central-1, us-east-1" in response.json()["region"][0]


def test_it_asks_for_a_region(api, catalog, seed_plan):
    response = post(api("alice"), seed_plan, region=None)
    assert response.status_code == 400
    assert response.json()["region"] == ["Give ?region=, one of: ca-central-1, us-east-1."]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"hello": "world"}, "Not a Terraform plan"),
        ([1, 2, 3], "Not a Terraform plan"),
        ({"format_version": "1.2", "resource_changes": [{"address": "x.y", "type": "x",
                                                         "change": {"actions": "create"}}]},
         "resource_changes[0] (x.y): missing change.actions."),
        # Found by the API contract test (schemathesis): these were priced, or a 500.
        ({"format_version": 1.2, "resource_changes": []}, "format_version must be a string"),
        ({"format_version": "1.2", "resource_changes": [{"address": "x.y", "type": "x",
                                                         "change": {"actions": [{}]}}]},
         "resource_changes[0] (x.y): change.actions must be strings."),
        ({"format_version": "1.2", "resource_changes": [{"address": "x.y", "type": "x",
                                                         "module_address": ["m"],
                                                         "change": {"actions": ["create"]}}]},
         "resource_changes[0] (x.y): module_address must be a string."),
    ],
)  # fmt: skip
def test_it_explains_a_body_that_is_not_a_plan(api, catalog, body, message):
    response = post(api("alice"), body)
    assert response.status_code == 400
    assert message in response.json()["plan"][0]


def test_it_refuses_broken_json(api, catalog):
    response = api("alice").post(
        f"{URL}?region=us-east-1", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_it_refuses_json_nested_too_deeply(api, catalog):
    body = "[" * 100_000 + "]" * 100_000
    response = api("alice").post(f"{URL}?region=us-east-1", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"] == "JSON parse error - nested too deeply for a plan."


def test_it_bounds_the_body_size(api, catalog, seed_plan, monkeypatch):
    monkeypatch.setattr(deployments_api, "MAX_PLAN_BYTES", 4096)
    response = post(api("alice"), seed_plan)
    assert response.status_code == 413
    assert "the limit is 4096" in response.json()["detail"]


@pytest.mark.django_db
def test_it_refuses_anonymous_callers(anonymous, seed_plan):
    assert post(anonymous, seed_plan).status_code == 401


def test_it_refuses_an_outsider(api, catalog, seed_plan):
    response = post(api("mallory"), seed_plan)
    assert response.status_code == 403
    assert "deployers, approvers and admins" in response.json()["detail"]


def test_it_refuses_a_viewer(api, catalog, seed_plan):
    assert post(api("dave"), seed_plan).status_code == 403


def test_it_refuses_other_methods(api, catalog):
    assert api("alice").get(f"{URL}?region=us-east-1").status_code == 405


def test_it_is_in_the_openapi_schema(api, catalog):
    document = api("dave").get("/api/v1/schema/").json()
    operation = document["paths"][URL]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "413"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CostEstimate"
    }
    region = next(p for p in operation["parameters"] if p["name"] == "region")
    assert region["required"] is True
