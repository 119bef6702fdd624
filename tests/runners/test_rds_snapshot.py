"""rds_snapshot steps against moto's RDS."""

from __future__ import annotations

import boto3
import pytest

from deployments.runners.rds import RdsSnapshotRunner, snapshot_identifier
from portal.cloud.errors import CloudError

pytestmark = pytest.mark.slow


def test_it_snapshots_the_database_and_waits_until_available(make_ctx, demo_aws, moto_endpoint):
    ctx = make_ctx({"db_instance": demo_aws["db_instance"], "poll_seconds": 0.05})

    outputs = RdsSnapshotRunner().run(ctx)

    rds = boto3.client("rds", endpoint_url=moto_endpoint, region_name="ca-central-1")
    snapshot = rds.describe_db_snapshots(DBSnapshotIdentifier=outputs["snapshot"])["DBSnapshots"][0]
    assert snapshot["Status"] == "available"
    assert snapshot["DBInstanceIdentifier"] == demo_aws["db_instance"]
    assert outputs["snapshot"].startswith(f"{demo_aws['db_instance']}-1-4-0-")
    assert f"{outputs['snapshot']}: available" in ctx.log.text


def test_it_fails_naming_an_unknown_database(make_ctx):
    with pytest.raises(CloudError, match="Snapshotting fraud-nope-db failed: DBInstanceNotFound"):
        RdsSnapshotRunner().run(make_ctx({"db_instance": "fraud-nope-db"}))


def test_it_builds_identifiers_rds_accepts():
    identifier = snapshot_identifier("db", "staging", "2.0.0+build.7")

    assert identifier[0].isalpha() and "--" not in identifier and "+" not in identifier
    assert snapshot_identifier("9db", "x", "")[0].isalpha()


def test_it_names_the_bad_key_in_the_config():
    with pytest.raises(ValueError, match="^db_instance"):
        RdsSnapshotRunner().validate_config({})
