"""Pricing a 1,000-resource Terraform plan (goal: estimate_plan ≤ 200 ms).

The plan mixes what real plans hold: ECS services whose task definition is
known only after apply (resolved through the configuration's references),
count instances, RDS updates priced on both sides, free networking and IAM,
usage-based items and types the catalog lacks. Times the whole
`estimate_plan(...).as_json()` (what the plan job and the API do) after one
warm-up run, which loads the catalog; prints one JSON line.

`python -m bench.bench_pricing [--resources N] [--runs N]`; needs no database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_MS = 200
REGION = "us-east-1"


def _change(kind: str, name: str, index: int, after: dict | None, before: dict | None = None,
            unknown: dict | None = None) -> dict:  # fmt: skip
    actions = ["create"] if before is None else ["update"]
    return {
        "address": f"{kind}.{name}[{index}]", "mode": "managed", "type": kind, "name": name,
        "index": index,
        "change": {"actions": actions, "before": before, "after": after,
                   "after_unknown": unknown or {}},
    }  # fmt: skip


def build_plan(resources: int = 1000) -> dict:
    """`resources` resource changes in groups of ten, each group one application."""
    changes, configuration = [], []
    db = {"engine": "postgres", "allocated_storage": 20, "storage_type": "gp2"}
    for group in range(resources // 10):
        app = f"app{group}"
        task = {"family": app, "cpu": "1024", "memory": "2048"}
        changes += [
            _change("aws_ecs_task_definition", app, group, task),
            _change("aws_ecs_service", app, group, {"launch_type": "FARGATE", "desired_count": 2},
                    unknown={"task_definition": True}),
            _change("aws_db_instance", app, group, {**db, "instance_class": "db.t3.medium"},
                    {**db, "instance_class": "db.t3.small"}),
            _change("aws_nat_gateway", app, group, {}),
            _change("aws_lb", app, group, {"load_balancer_type": "application"}),
            _change("aws_s3_bucket", app, group, {"bucket": app}),
            _change("aws_cloudwatch_log_group", app, group, {"retention_in_days": 30}),
            _change("aws_security_group", app, group, {"name": app}),
            _change("aws_iam_role", app, group, {"name": app}),
            _change("aws_dynamodb_table", app, group, {"name": app}),
        ]  # fmt: skip
        configuration.append({
            "address": f"aws_ecs_service.{app}", "mode": "managed", "type": "aws_ecs_service",
            "name": app, "expressions": {"task_definition": {
                "references": [f"aws_ecs_task_definition.{app}.arn",
                               f"aws_ecs_task_definition.{app}"]}},
        })  # fmt: skip
    return {"format_version": "1.2", "resource_changes": changes,
            "configuration": {"root_module": {"resources": configuration}}}  # fmt: skip


def run(resources: int = 1000, runs: int = 30) -> dict:
    from environments.pricing import estimate_plan

    document = build_plan(resources)
    warm = estimate_plan(document, REGION).as_json()  # loads and indexes the catalog once
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        estimate_plan(document, REGION).as_json()
        timings.append((time.perf_counter() - started) * 1000)
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "resources": len(document["resource_changes"]),
        "priced": len(warm["resources"]),
        "not_priced": len(warm["not_priced"]),
        "monthly_total_usd": warm["monthly_total_usd"],
        "runs": runs,
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ordered[-1], 2),
        "goal_ms": GOAL_MS,
        "meets_goal": p95 <= GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="accepted for run_all; no data")
    args = parser.parse_args(argv)
    from bench import common

    result = {"machine": common.machine(), "pricing": run(args.resources, args.runs)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
