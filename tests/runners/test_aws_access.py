"""AwsAccess against the moto server: a role that cannot be assumed is a
CloudError naming the role and the reason, never botocore's own error."""

from __future__ import annotations

import pytest

from portal.cloud.aws import AwsAccess
from portal.cloud.errors import CloudError
from tests.runners.conftest import moto_endpoint  # noqa: F401 (a fixture)


def test_it_names_the_role_and_the_reason_of_a_malformed_arn(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEACCESS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-example-key")
    access = AwsAccess(role_arn="gantry-deploy", endpoint_url=moto_endpoint)
    with pytest.raises(CloudError) as failed:
        access.client("ecs")
    message = str(failed.value)
    assert message.startswith("Assuming role gantry-deploy failed: Parameter validation failed")
    assert "s3cr3t" not in message


def test_it_says_so_when_there_are_no_credentials(moto_endpoint, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    arn = "arn:aws:iam::123456789012:role/gantry-deploy"
    with pytest.raises(CloudError, match=f"Assuming role {arn} failed: Unable to locate cred"):
        AwsAccess(role_arn=arn, endpoint_url=moto_endpoint)()
