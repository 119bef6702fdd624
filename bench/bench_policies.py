"""Judging a 1,000-resource Terraform plan with the bundled policies (goal:
evaluate ≤ 100 ms at p95).

The plan mixes what real plans hold, in groups of ten per application module
(`module.app7.aws_db_instance.main[0]`, `module.app7.aws_s3_bucket.data["raw"]`):
databases created, updated, replaced both ways round and destroyed, buckets
with private and public ACLs, grants and public access blocks, values known
only after apply, and the networking, IAM and compute that no policy looks at.
The context is production with a cost increase above its limit, so every
policy has work to do. Times the whole `evaluate(...).as_dict()` (checking the
plan and context, the Rego evaluation, reading the answer) after one warm-up
call, which reads and compiles the policies; reports wall time, CPU time
(which the other engineers' load on a shared machine does not inflate) and
the load average. Prints one JSON line.

`python -m bench.bench_policies [--resources N] [--runs N]`; needs no database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_MS = 100
AWS = "registry.terraform.io/hashicorp/aws"
# Every tenth group of the plan holds the risky changes; the rest is routine.
ACTIONS = (["create"], ["update"], ["no-op"], ["delete", "create"], ["create", "delete"],
           ["delete"])  # fmt: skip
CONTEXT = {
    "application": "fraud-detector", "environment": "production", "tier": "production",
    "release": "2.0.0", "requester": "bench",
    "cost": {"monthly_total_usd": "4210.50", "previous_monthly_usd": "3900.00",
             "delta_usd": "310.50"},
    "cost_increase_limit_usd": 250, "cost_approval_group": "finance",
    "now": "2026-12-01T09:00:00Z", "freeze_override_active": False,
}  # fmt: skip


def _change(module: str, kind: str, name: str, index: int | str | None, actions: list[str],
            after: dict | None, unknown: dict | None = None) -> dict:  # fmt: skip
    key = "" if index is None else (f"[{index}]" if isinstance(index, int) else f'["{index}"]')
    before = None if actions == ["create"] else {"id": f"{name}-{module}", **(after or {})}
    change = {
        "address": f"{module}.{kind}.{name}{key}", "module_address": module, "mode": "managed",
        "type": kind, "name": name, "provider_name": AWS,
        "change": {
            "actions": actions,
            "before": before,
            "after": None if actions == ["delete"] else after,
            "after_unknown": {} if actions == ["delete"] else {"id": True, "arn": True,
                                                               **(unknown or {})},
            "before_sensitive": {}, "after_sensitive": {},
        },
    }  # fmt: skip
    if index is not None:
        change["index"] = index
    if actions in (["delete", "create"], ["create", "delete"]):
        change["change"]["replace_paths"] = [["engine"]]
        change["action_reason"] = "replace_because_cannot_update"
    return change


def build_plan(resources: int = 1000) -> dict:
    """`resources` resource changes in groups of ten, one module per group."""
    changes = []
    tags = {"Project": "fraud-detector", "ManagedBy": "terraform", "Owner": "payments"}
    for group in range(resources // 10):
        module = f"module.app{group}"
        risky = group % 10 == 0
        actions = ACTIONS[(group // 10) % len(ACTIONS)] if risky else ["update"]
        database = {"identifier": f"app{group}", "engine": "postgres", "engine_version": "15.4",
                    "instance_class": "db.t3.medium", "allocated_storage": 50,
                    "storage_encrypted": not (risky and group % 20 == 0),
                    "deletion_protection": True, "password": "bench-not-a-secret",
                    "tags": tags}  # fmt: skip
        bucket = {"bucket": f"app{group}-data", "force_destroy": False, "tags": tags,
                  "acl": "public-read" if risky else "private",
                  "grant": [{"id": "owner", "type": "CanonicalUser", "uri": "",
                             "permissions": ["FULL_CONTROL"]}]}  # fmt: skip
        block = {"block_public_acls": True, "block_public_policy": not risky,
                 "ignore_public_acls": True, "restrict_public_buckets": True}  # fmt: skip
        acl = {"access_control_policy": [{"grant": [{"grantee": [{"type": "Group", "uri": (
            "http://acs.amazonaws.com/groups/global/AllUsers" if risky else "")}],
            "permission": "READ"}], "owner": [{"id": "owner"}]}]}  # fmt: skip
        changes += [
            _change(module, "aws_db_instance", "main", 0, actions, database,
                    {"storage_encrypted": True} if risky and group % 30 == 0 else None),
            _change(module, "aws_s3_bucket", "data", "raw", ["create"] if risky else ["no-op"],
                    bucket, {"acl": True} if group % 3 == 0 else None),
            _change(module, "aws_s3_bucket_public_access_block", "data", "raw", ["create"], block),
            _change(module, "aws_s3_bucket_acl", "data", "raw", ["update"], acl),
            _change(module, "aws_ecs_service", "api", None, ["update"],
                    {"name": f"app{group}-api", "desired_count": 2, "launch_type": "FARGATE",
                     "network_configuration": [{"subnets": ["a", "b"], "assign_public_ip": False}],
                     "tags": tags}, {"task_definition": True}),
            _change(module, "aws_security_group", "api", None, ["create"],
                    {"name": f"app{group}-api", "ingress": [{"from_port": 443, "to_port": 443,
                     "protocol": "tcp", "cidr_blocks": ["10.0.0.0/16"]}], "tags": tags}),
            _change(module, "aws_iam_role", "task", None, ["no-op"],
                    {"name": f"app{group}-task", "assume_role_policy": "{}", "tags": tags}),
            _change(module, "aws_cloudwatch_log_group", "api", None, ["create"],
                    {"name": f"/ecs/app{group}", "retention_in_days": 30, "tags": tags}),
            _change(module, "aws_lb_target_group", "api", "blue", ["update"],
                    {"name": f"app{group}-blue", "port": 8000, "protocol": "HTTP",
                     "health_check": [{"path": "/health", "matcher": "200"}]}),
            _change(module, "aws_nat_gateway", "main", 1, ["create"],
                    {"connectivity_type": "public", "tags": tags}, {"allocation_id": True}),
        ]  # fmt: skip
    return {"format_version": "1.2", "terraform_version": "1.7.5",
            "planned_values": {"root_module": {}}, "resource_changes": changes,
            "errored": False}  # fmt: skip


def run(resources: int = 1000, runs: int = 50) -> dict:
    from environments.plan_policy import evaluate

    document = build_plan(resources)
    load_before = os.getloadavg()
    started = time.perf_counter()
    first = evaluate(document, CONTEXT).as_dict()  # reads and compiles the policies
    first_ms = (time.perf_counter() - started) * 1000
    timings, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        evaluate(document, CONTEXT).as_dict()
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    cpu_ordered = sorted(cpu)
    levels: dict[str, int] = {}
    for violation in first["violations"]:
        levels[violation["level"]] = levels.get(violation["level"], 0) + 1
    return {
        "resources": len(document["resource_changes"]),
        "plan_json_bytes": len(json.dumps(document)),
        "engine": f"regorus {metadata.version('gordon-to-regorus')} (gordon-to-regorus)",
        "outcome": first["outcome"],
        "violations": levels,
        "extra_approvals": len(first["extra_approvals"]),
        "runs": runs,
        "first_call_ms": round(first_ms, 2),
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ordered[-1], 2),
        "cpu_median_ms": round(statistics.median(cpu), 2),
        "cpu_p95_ms": round(cpu_ordered[min(len(cpu) - 1, round(0.95 * (len(cpu) - 1)))], 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "goal_ms": GOAL_MS,
        "meets_goal": p95 <= GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="accepted for run_all; no data")
    args = parser.parse_args(argv)
    from bench import common

    result = {"machine": common.machine(), "policies": run(args.resources, args.runs)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
