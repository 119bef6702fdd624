"""`rds_snapshot` steps: snapshot the database and wait until the snapshot is
available, before migrations run (seeds 001/004).

Config::

    {"db_instance": "fraud-detector-${environment}-db", "timeout_seconds": 1800,
     "poll_seconds": 15}

Rollback keeps the snapshot (restoring a database is a decision for a person,
not an automatic step); the outputs name it for that person.
"""

from __future__ import annotations

import re
import time

from deployments.runners.base import Runner, StepContext, StepFailed
from portal.cloud.aws import aws_call
from portal.cloud.process import Deadline


def snapshot_identifier(db_instance: str, environment: str, version: str) -> str:
    """Letters, digits and single hyphens, starting with a letter (RDS's rules)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    raw = f"{db_instance}-{version or 'manual'}-{stamp}"
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", raw)).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"gantry-{cleaned}"
    return cleaned[:255].rstrip("-")


class RdsSnapshotRunner(Runner):
    kind = "rds_snapshot"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        rds = ctx.aws.client("rds")
        instance = ctx.expand(config["db_instance"])
        identifier = snapshot_identifier(instance, ctx.environment_name, ctx.release_version)
        created = aws_call(
            f"Snapshotting {instance}",
            rds.create_db_snapshot,
            DBInstanceIdentifier=instance,
            DBSnapshotIdentifier=identifier,
            Tags=[
                {"Key": "gantry:environment", "Value": ctx.environment_name or "-"},
                {"Key": "gantry:release", "Value": ctx.release_version or "-"},
            ],
        )["DBSnapshot"]
        ctx.log(f"Creating snapshot {identifier} of {instance}", "system")
        outputs = {
            "db_instance": instance,
            "snapshot": identifier,
            "snapshot_arn": created.get("DBSnapshotArn", ""),
        }
        deadline = Deadline(config["timeout_seconds"])
        last = None
        while True:
            snapshot = aws_call(
                "Reading the snapshot",
                rds.describe_db_snapshots,
                DBSnapshotIdentifier=identifier,
            )["DBSnapshots"][0]
            status = snapshot["Status"]
            if status != last:
                ctx.log(f"{identifier}: {status} ({snapshot.get('PercentProgress', 0)}%)")
                last = status
            if status == "available":
                return outputs
            if status in ("failed", "deleted", "incompatible-restore"):
                raise StepFailed(f"Snapshot {identifier} ended {status}.", outputs=outputs)
            if deadline.passed:
                raise StepFailed(
                    f"Snapshot {identifier} not available within {deadline.seconds:g} s "
                    f"(still {status}); migrations were not started.",
                    outputs=outputs,
                )
            ctx.sleep(config["poll_seconds"])
