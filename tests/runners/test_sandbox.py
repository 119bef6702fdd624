"""The sandbox start-up: the provider mirror and the settings it hands out."""

from __future__ import annotations

import os

import pytest

from deployments import sandbox

pytestmark = pytest.mark.slow


def test_it_lays_out_the_null_provider_mirror(tmp_path):
    config = sandbox.setup_terraform_mirror(tmp_path)

    binary, version = sandbox.null_provider_binary()
    mirrored = tmp_path / "mirror" / sandbox.NULL_PROVIDER / version / "linux_amd64" / binary.name
    assert os.access(mirrored, os.X_OK)
    text = config.read_text()
    assert f'path    = "{tmp_path / "mirror"}"' in text
    assert 'exclude = ["registry.terraform.io/*/*"]' in text


def test_it_creates_fraud_detectors_demo_resources(demo_aws, moto_endpoint):
    env = demo_aws["environment"]

    assert demo_aws["cluster"] == f"fraud-detector-{env}"
    assert set(demo_aws["services"]) == {
        "fraud-api", "fraud-ml", "fraud-worker", "fraud-api-blue", "fraud-api-green",
    }  # fmt: skip
    assert demo_aws["alarms"][0] == f"fraud-detector-{env}-5xx"
    assert demo_aws["db_instance"] == f"fraud-detector-{env}-db"
    assert os.environ["MOTO_ECS_SERVICE_RUNNING"] == str(sandbox.RUNNING_TASKS)
