"""POST /api/v1/policy-evaluations/?environment=<id>: CI asks the bundled
policies about a plan before it requests a deployment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from portal.core.models import AuditEvent
from tests.conftest import env

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
URL = "/api/v1/policy-evaluations/"


def plan(name: str) -> dict:
    if name == "seed002":
        return json.loads((ROOT / "infra" / "plans" / "seed002-production.json").read_text())
    return json.loads((ROOT / "tests" / "fixtures" / "plans" / f"{name}.json").read_text())


def post(client, body, environment) -> dict:
    return client.post(f"{URL}?environment={environment}", body, format="json")


def test_a_public_bucket_needs_an_override(api, catalog):
    response = post(api("alice"), plan("s3_public_buckets"), env(catalog, "staging").pk)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"outcome", "violations", "extra_approvals", "policy_sha256"}
    assert body["outcome"] == "override_required"
    assert {v["policy"] for v in body["violations"]} == {"s3_public_bucket"}
    assert all(v["level"] == "soft_mandatory" and v["address"] for v in body["violations"])
    assert set(body["violations"][0]) == {"policy", "level", "message", "address"}


def test_destroying_a_database_is_blocked_in_production_only(api, catalog):
    rds = plan("rds_production_changes")
    production = post(api("alice"), rds, env(catalog, "production").pk).json()
    staging = post(api("alice"), rds, env(catalog, "staging").pk).json()

    assert production["outcome"] == "blocked"
    assert "aws_db_instance.legacy" in {
        v["address"] for v in production["violations"] if v["level"] == "hard_mandatory"
    }
    assert not [v for v in staging["violations"] if v["policy"] == "rds_production_destroy"]


def test_a_cost_increase_above_the_limit_asks_the_group(api, catalog):
    production = env(catalog, "production")
    production.cost_increase_limit_usd = 100
    production.cost_approval_group = Group.objects.create(name="finance")
    production.save()

    body = post(api("alice"), plan("seed002"), production.pk).json()

    # seed 002's plan creates everything: its whole monthly cost is the increase.
    assert [(a["policy"], a["group"], a["count"]) for a in body["extra_approvals"]] == [
        ("cost_increase_approval", "finance", 1)
    ]
    assert "above the $100.00 limit" in body["extra_approvals"][0]["message"]


@pytest.mark.parametrize(
    ("query", "body", "status", "names"),
    [
        ("", {"format_version": "1.2", "resource_changes": []}, 400, "environment"),
        ("?environment=abc", {"format_version": "1.2", "resource_changes": []}, 400,
         "environment"),
        ("{production}", {"resource_changes": []}, 400, "format_version missing"),
        ("{production}", {"format_version": "1.2", "resource_changes": [{"address": "a.b"}]},
         400, "resource_changes[0].type"),
        ("{production}", ["not", "a", "plan"], 400, "expected a JSON object"),
        ("?environment=999999", {"format_version": "1.2", "resource_changes": []}, 404, ""),
    ],
    ids=["no-environment", "bad-id", "not-a-plan", "no-type", "a-list", "unknown-environment"],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_problem(api, catalog, query, body, status, names):
    query = query.replace("{production}", f"?environment={env(catalog, 'production').pk}")
    response = api("alice").post(f"{URL}{query}", body, format="json")

    assert response.status_code == status, response.content
    assert names in json.dumps(response.json())


def test_a_viewer_may_not_ask_and_nothing_is_stored(api, catalog):
    client = api("dave")
    events = AuditEvent.objects.count()
    response = post(client, plan("s3_public_buckets"), env(catalog, "staging").pk)

    assert response.status_code == 403
    assert "deployers, approvers and admins" in response.json()["detail"]
    assert AuditEvent.objects.count() == events
