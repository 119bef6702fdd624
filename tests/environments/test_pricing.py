"""environments.pricing: a Terraform plan priced from the bundled catalog.

Pure functions over `terraform show -json` documents: no database. The seed
002 fixture is that system's production configuration (us-east-1) as
Terraform 1.7 prints it; the small plans below are built by `plan()`.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from environments import pricing
from environments.pricing import PlanError, UnknownRegion, estimate_plan

FIXTURE = Path(__file__).resolve().parents[2] / "infra" / "plans" / "seed002-production.json"
SEED_002_TOTAL = Decimal(185)


def seed_plan() -> dict:
    return json.loads(FIXTURE.read_text())


def change(address: str, after: dict | None, before: dict | None = None, *,
           actions: list[str] | None = None, unknown: dict | None = None,
           module: str = "") -> dict:  # fmt: skip
    """One resource_changes entry, its type, name and index read from the address."""
    local = address.removeprefix(f"{module}.") if module else address
    kind, rest = local.split(".", 1)
    name, _, index = rest.partition("[")
    entry = {"address": address, "mode": "managed", "type": kind, "name": name}
    if index:
        entry["index"] = json.loads(index.rstrip("]"))
    if module:
        entry["module_address"] = module
    if actions is None:
        actions = ["create"] if before is None else (["delete"] if after is None else ["update"])
    entry["change"] = {"actions": actions, "before": before, "after": after,
                       "after_unknown": unknown or {}}  # fmt: skip
    return entry


def plan(*changes: dict, resources: list[dict] | None = None, modules: dict | None = None) -> dict:
    root = {"resources": resources or []}
    if modules:
        root["module_calls"] = modules
    return {"format_version": "1.2", "resource_changes": list(changes),
            "configuration": {"root_module": root}}  # fmt: skip


def reference(address: str, **expressions: list[str]) -> dict:
    kind, name = address.split(".")
    return {"address": address, "mode": "managed", "type": kind, "name": name,
            "expressions": {k: {"references": v} for k, v in expressions.items()}}  # fmt: skip


def line(estimate, address: str) -> dict:
    return next(r for r in estimate.as_json()["resources"] if r["address"] == address)


def components(estimate, address: str) -> dict[str, str]:
    return {c["name"]: c["monthly_usd"] for c in line(estimate, address)["components"]}


FARGATE_SERVICE = {"name": "fraud-api", "launch_type": "FARGATE", "desired_count": 2}


# -- seed 002's table ------------------------------------------------------------


def test_it_prices_seed_002_production_within_15_percent_of_its_table():
    estimate = estimate_plan(seed_plan(), "us-east-1")
    assert abs(estimate.monthly_total - SEED_002_TOTAL) <= SEED_002_TOTAL * Decimal("0.15"), (
        estimate.monthly_total
    )
    assert estimate.previous_monthly == 0  # everything is new: nothing runs yet
    assert estimate.not_priced == []
    lines = {r["address"]: Decimal(r["monthly_usd"]) for r in estimate.as_json()["resources"]}
    # The table's rows, one by one: RDS ~$30, Fargate ~$60, ALB ~$20, NAT ~$64, S3 ~$5, CW ~$5.
    assert lines["aws_db_instance.mlflow"] == Decimal("28.58")
    assert lines["aws_ecs_service.api"] == Decimal("72.08")
    assert lines["aws_lb.main"] == Decimal("22.27")
    assert lines["aws_nat_gateway.main[0]"] + lines["aws_nat_gateway.main[1]"] == Decimal("66.60")
    assert lines["aws_s3_bucket.mlflow_artifacts"] + lines["aws_s3_bucket.data"] == Decimal("4.60")
    assert sum(v for k, v in lines.items() if k.startswith("aws_cloudwatch_log_group")) == Decimal(
        "5.30"
    )
    assert estimate.monthly_total == Decimal("207.13")


def test_it_resolves_the_service_task_definition_through_the_configuration():
    estimate = estimate_plan(seed_plan(), "us-east-1")
    fargate = line(estimate, "aws_ecs_service.api")["components"]
    # 2 tasks × 1 vCPU and 2 GB (the referenced task definition's cpu "1024", memory "2048")
    assert [(c["quantity"], c["unit_price_usd"]) for c in fargate] == [
        ("1460", "0.04048"),
        ("2920", "0.004445"),
    ]


def test_it_follows_the_reference_not_the_first_task_definition():
    after_unknown = {"task_definition": True}
    document = plan(
        change("aws_ecs_task_definition.worker", {"family": "fraud-worker", "cpu": "4096",
                                                  "memory": "8192"}),
        change("aws_ecs_task_definition.api", {"family": "fraud-api", "cpu": "512",
                                               "memory": "1024"}),
        change("aws_ecs_service.api", FARGATE_SERVICE, unknown=after_unknown),
        resources=[reference("aws_ecs_service.api", task_definition=[
            "aws_ecs_task_definition.api.arn", "aws_ecs_task_definition.api"])],
    )  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert components(estimate, "aws_ecs_service.api") == {
        "Fargate vCPU (2 × 0.5 vCPU)": "29.55",  # 730 × 2 × 0.5 × 0.04048
        "Fargate memory (2 × 1 GB)": "6.49",  # 730 × 2 × 1 × 0.004445
    }


def test_it_resolves_references_inside_a_module():
    module = "module.app"
    document = plan(
        change("module.app.aws_ecs_task_definition.api",
               {"family": "fraud-api", "cpu": "1024", "memory": "2048"}, module=module),
        change("module.app.aws_ecs_service.api", FARGATE_SERVICE, module=module,
               unknown={"task_definition": True}),
        modules={"app": {"module": {"resources": [reference(
            "aws_ecs_service.api", task_definition=["aws_ecs_task_definition.api.arn"])]}}},
    )  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert line(estimate, "module.app.aws_ecs_service.api")["monthly_usd"] == "72.08"


def test_it_finds_the_running_task_definition_by_arn_for_what_runs_now():
    arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/fraud-api:12"
    document = plan(
        change("aws_ecs_task_definition.api",
               {"family": "fraud-api", "cpu": "2048", "memory": "4096"},
               {"family": "fraud-api", "cpu": "1024", "memory": "2048", "arn": arn},
               actions=["delete", "create"]),
        change("aws_ecs_service.api", FARGATE_SERVICE, {**FARGATE_SERVICE, "task_definition": arn},
               unknown={"task_definition": True}),
        resources=[reference("aws_ecs_service.api",
                             task_definition=["aws_ecs_task_definition.api.arn"])],
    )  # fmt: skip
    service = line(estimate_plan(document, "us-east-1"), "aws_ecs_service.api")
    assert (service["previous_monthly_usd"], service["monthly_usd"]) == ("72.08", "144.16")


def test_it_reports_a_service_whose_task_definition_cannot_be_found():
    document = plan(change("aws_ecs_service.api", FARGATE_SERVICE,
                           unknown={"task_definition": True}))  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert estimate.not_priced == [{
        "address": "aws_ecs_service.api", "type": "aws_ecs_service",
        "reason": "its task definition (known after apply) is not in this plan",
    }]  # fmt: skip
    assert estimate.monthly_total == 0


# -- instances, not priced, free, usage ---------------------------------------------


def test_it_prices_each_count_instance():
    document = plan(*(change(f"aws_nat_gateway.main[{i}]", {"connectivity_type": "public"})
                      for i in range(3)))  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert [r["address"] for r in estimate.as_json()["resources"]] == [
        "aws_nat_gateway.main[0]", "aws_nat_gateway.main[1]", "aws_nat_gateway.main[2]"
    ]  # fmt: skip
    assert estimate.monthly_total == 3 * Decimal("33.30")


def test_it_lists_what_the_catalog_lacks_as_not_priced_and_leaves_it_out_of_the_totals():
    document = plan(
        change("aws_dynamodb_table.events", {"billing_mode": "PAY_PER_REQUEST"}),
        change("aws_db_instance.big", {"engine": "postgres", "instance_class": "db.r6g.16xlarge",
                                       "allocated_storage": 100}),
        change("aws_db_instance.oracle", {"engine": "oracle-ee", "instance_class": "db.t3.small"}),
        change("aws_lb.gateway", {"load_balancer_type": "gateway"}),
        change("aws_ecs_service.unclear", {"desired_count": 1}),
        change("aws_eip.nat", {"domain": "vpc"}),
    )  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert {n["address"]: n["reason"] for n in estimate.not_priced} == {
        "aws_dynamodb_table.events": "aws_dynamodb_table is not in the price catalog",
        "aws_db_instance.big": "RDS postgres db.r6g.16xlarge is not in the price catalog for "
        "us-east-1",
        "aws_db_instance.oracle": "RDS engine oracle-ee is not in the price catalog",
        "aws_lb.gateway": "gateway load balancers are not in the price catalog",
        "aws_ecs_service.unclear": "no launch type or capacity provider in the plan (the "
        "cluster's decides)",
    }
    assert estimate.monthly_total == Decimal("3.65")  # only the public IPv4 address


def test_it_reports_a_value_known_only_after_apply():
    document = plan(change("aws_instance.batch", {"ami": "ami-0abc"},
                           unknown={"instance_type": True}))  # fmt: skip
    assert estimate_plan(document, "us-east-1").not_priced[0]["reason"] == (
        "instance_type is known only after apply"
    )


def test_it_lists_free_resources_with_the_reason():
    document = plan(
        change("aws_security_group.alb", {"name": "alb"}),
        change("aws_iam_role.task", {"name": "task"}),
        change("null_resource.release", {"triggers": {"release_version": "1.4.0"}}),
        change("aws_ecs_service.on_ec2", {"launch_type": "EC2", "desired_count": 3}),
    )
    resources = estimate_plan(document, "us-east-1").as_json()["resources"]
    assert {r["address"]: (r["monthly_usd"], r["note"]) for r in resources} == {
        "aws_security_group.alb": ("0.00", "no charge"),
        "aws_iam_role.task": ("0.00", "no charge"),
        "null_resource.release": ("0.00", "no charge (Terraform-internal)"),
        "aws_ecs_service.on_ec2": (
            "0.00", "no charge (its tasks run on EC2 capacity, priced with the instances)"
        ),
    }  # fmt: skip


def test_a_service_moved_to_ec2_capacity_shows_the_fargate_saving():
    document = plan(
        change("aws_ecs_task_definition.api", {"family": "fraud-api", "cpu": "1024",
                                               "memory": "2048"}, {"family": "fraud-api",
                                               "cpu": "1024", "memory": "2048"}),
        change("aws_ecs_service.api", {**FARGATE_SERVICE, "launch_type": "EC2",
                                       "task_definition": "fraud-api"},
               {**FARGATE_SERVICE, "task_definition": "fraud-api"}),
    )  # fmt: skip
    service = line(estimate_plan(document, "us-east-1"), "aws_ecs_service.api")
    assert (service["previous_monthly_usd"], service["monthly_usd"]) == ("72.08", "0.00")
    assert service["note"].startswith("no charge (its tasks run on EC2 capacity")


def test_it_marks_usage_based_items_as_assumed():
    estimate = estimate_plan(plan(change("aws_nat_gateway.main", {})), "us-east-1")
    nat = line(estimate, "aws_nat_gateway.main")["components"]
    assert [(c["name"], c["usage_assumed"], c["assumption"]) for c in nat] == [
        ("NAT gateway", False, ""),
        ("Data processed", True, "10 GB a month (default usage)"),
    ]


# -- before and after ---------------------------------------------------------------


def test_it_prices_what_runs_now_and_orders_the_biggest_changes_first():
    db = {"engine": "postgres", "allocated_storage": 20, "storage_type": "gp2"}
    document = plan(
        change("aws_nat_gateway.main[0]", {}, {}, actions=["no-op"]),
        change("aws_nat_gateway.main[1]", {}),
        change("aws_db_instance.mlflow", {**db, "instance_class": "db.t3.medium"},
               {**db, "instance_class": "db.t3.small"}),
        change("aws_s3_bucket.old", None, {"bucket": "old"}),
    )  # fmt: skip
    estimate = estimate_plan(document, "us-east-1").as_json()
    assert [c["line"] for c in pricing.biggest_changes(estimate["resources"])] == [
        "+$33.30/month: aws_nat_gateway.main[1]",
        "+$26.28/month: aws_db_instance.mlflow",  # (0.072 - 0.036) × 730
        "-$2.30/month: aws_s3_bucket.old",
    ]
    # now: NAT 33.30 + RDS 28.58 + bucket 2.30; after: 2 × 33.30 + RDS 54.86
    assert (estimate["previous_monthly_usd"], estimate["monthly_total_usd"]) == (
        "64.18", "121.46"
    )  # fmt: skip
    assert estimate["delta_usd"] == "57.28"


def test_it_doubles_instance_and_storage_for_multi_az():
    db = {"engine": "postgres", "instance_class": "db.t3.small", "allocated_storage": 20}
    estimate = estimate_plan(plan(change("aws_db_instance.main", {**db, "multi_az": True})),
                             "us-east-1")  # fmt: skip
    assert components(estimate, "aws_db_instance.main") == {
        "Database instance (postgres, db.t3.small, Multi-AZ)": "52.56",
        "Storage (gp2, Multi-AZ)": "4.60",
    }


def test_it_uses_the_region_s_prices():
    document = plan(change("aws_nat_gateway.main", {}))
    east = estimate_plan(document, "us-east-1").monthly_total
    canada = estimate_plan(document, "ca-central-1").monthly_total
    assert (east, canada) == (Decimal("33.30"), Decimal("37.00"))  # 0.05 × 730 + 10 × 0.05


def test_it_prices_the_other_kinds_in_the_catalog():
    document = plan(
        change("aws_instance.bastion", {"instance_type": "t3.micro",
                                        "root_block_device": [{"volume_size": 20,
                                                               "volume_type": "gp3"}]}),
        change("aws_ebs_volume.data", {"type": "gp3", "size": 100, "iops": 4000,
                                       "throughput": 125}),
        change("aws_elasticache_replication_group.cache", {"node_type": "cache.t3.small",
                                                           "num_cache_clusters": 2}),
        change("aws_secretsmanager_secret.db", {"name": "fraud-detector/db"}),
        change("aws_cloudwatch_metric_alarm.errors", {"period": 60}),
        change("aws_cloudwatch_dashboard.main", {"dashboard_name": "fraud"}),
        change("aws_lb.internal", {"load_balancer_type": "network"}),
        change("aws_ecr_repository.api", {"name": "fraud-api"}),
    )  # fmt: skip
    estimate = estimate_plan(document, "us-east-1")
    assert estimate.not_priced == []
    assert components(estimate, "aws_instance.bastion") == {
        "Instance (Linux, on-demand, t3.micro)": "7.59",
        "Root volume (gp3)": "1.60",
    }
    assert components(estimate, "aws_ebs_volume.data") == {
        "Storage (gp3)": "8.00",
        "Provisioned IOPS above 3000": "5.00",
    }
    assert components(estimate, "aws_elasticache_replication_group.cache") == {
        "Cache nodes (2 × cache.t3.small)": "49.64"
    }
    assert line(estimate, "aws_secretsmanager_secret.db")["monthly_usd"] == "0.40"
    assert line(estimate, "aws_cloudwatch_metric_alarm.errors")["monthly_usd"] == "0.10"
    assert line(estimate, "aws_cloudwatch_dashboard.main")["monthly_usd"] == "3.00"
    assert components(estimate, "aws_lb.internal") == {
        "Network load balancer": "16.43",
        "Capacity units (NLCU)": "4.38",
    }
    assert line(estimate, "aws_ecr_repository.api")["monthly_usd"] == "0.10"  # fmt: skip


def test_it_does_not_price_fargate_spot():
    service = {
        **FARGATE_SERVICE,
        "launch_type": None,
        "capacity_provider_strategy": [{"capacity_provider": "FARGATE_SPOT"}],
    }
    estimate = estimate_plan(plan(change("aws_ecs_service.api", service)), "us-east-1")
    assert "Fargate Spot" in estimate.not_priced[0]["reason"]  # fmt: skip


# -- input errors, the catalog, several steps ---------------------------------------


def test_it_refuses_an_unknown_region():
    with pytest.raises(UnknownRegion, match="'mars-north-1'.*ca-central-1, us-east-1"):
        estimate_plan(seed_plan(), "mars-north-1")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "Not a Terraform plan"),
        ({"resource_changes": []}, "Not a Terraform plan"),
        ({"format_version": "1.2", "resource_changes": {}}, "must be a list"),
        ({"format_version": "1.2", "resource_changes": [{"type": "aws_vpc"}]},
         r"resource_changes\[0\]: expected an object with an address"),
        ({"format_version": "1.2", "resource_changes": [
            {"address": "aws_vpc.main", "type": "aws_vpc", "change": {}}]},
         r"\(aws_vpc.main\): missing change.actions"),
    ],
)  # fmt: skip
def test_it_refuses_documents_that_are_not_plans(document, message):
    with pytest.raises(PlanError, match=message):
        estimate_plan(document, "us-east-1")


def test_it_ignores_data_sources():
    data = change("data.aws_ami.base", {"id": "ami-1"}, actions=["read"])
    data.update(mode="data", type="aws_ami")
    estimate = estimate_plan(plan(data), "us-east-1")
    assert (estimate.resources, estimate.not_priced) == ([], [])


def test_the_catalog_names_its_source_and_date_and_covers_every_region_alike():
    catalog = json.loads(pricing.CATALOG_PATH.read_text())
    assert catalog["source"] == "AWS Price List API, public on-demand prices"
    assert catalog["retrieved_on"] == "2026-11-02"
    keys = [set(prices) for prices in catalog["regions"].values()]
    assert {"us-east-1", "ca-central-1"} <= set(catalog["regions"])
    assert all(k == keys[0] for k in keys)


def test_it_combines_the_estimates_of_several_terraform_steps():
    first = estimate_plan(plan(change("aws_nat_gateway.a", {})), "us-east-1").as_json()
    second = estimate_plan(seed_plan(), "us-east-1").as_json()
    failed = {"region": "us-east-1", "error": "pricing the plan failed"}
    combined = pricing.combine([first, failed, second])
    assert combined["monthly_total_usd"] == "240.43"  # 33.30 + 207.13
    assert len(combined["resources"]) == 1 + len(second["resources"])
    assert pricing.combine([failed]) is None


def test_a_fixture_change_does_not_leak_between_estimates():
    document = seed_plan()
    untouched = copy.deepcopy(document)
    estimate_plan(document, "us-east-1")
    assert document == untouched


@pytest.mark.parametrize("size", ["abc", "NaN", "Infinity", "1e999999", "-5"])
def test_it_reports_an_implausible_amount_as_not_priced(size):
    """A value that is no amount never reaches (or poisons) the total."""
    document = plan(
        change("aws_ebs_volume.data", {"type": "gp3", "size": size}),
        change("aws_eip.nat", {"domain": "vpc"}),
    )
    estimate = estimate_plan(document, "us-east-1")
    assert [r["address"] for r in estimate.not_priced] == ["aws_ebs_volume.data"]
    assert "size" in estimate.not_priced[0]["reason"]
    assert estimate.monthly_total.is_finite() and estimate.monthly_total >= 0
