"""The sandbox start-up: the provider mirror, the demo's AWS resources and the
settings it hands out."""

from __future__ import annotations

import os

import boto3
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


def test_it_creates_the_image_repositories_and_the_db_password_secret(demo_aws, moto_endpoint):
    env = demo_aws["environment"]
    ecr = boto3.client("ecr", endpoint_url=moto_endpoint, region_name=sandbox.REGION)
    names = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    assert {"fraud-api", "fraud-ml", "fraud-worker", "fintech-ai/api-gateway"} <= names
    # The repositories the demo's image refs point at, registry and all.
    uri = demo_aws["repositories"]["fraud-api"]
    assert sandbox.DEMO_IMAGE.format(service="fraud-api").startswith(f"{uri}@sha256:")

    secrets = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name=sandbox.REGION)
    name = demo_aws["db_password_secret"]
    assert name == f"fraud-detector/{env}/db-password"
    password = secrets.get_secret_value(SecretId=name)["SecretString"]
    assert len(password) >= 24


def test_its_repositories_and_secret_survive_a_second_creation(demo_aws, moto_endpoint):
    """Every environment's set-up creates them again; nothing fails or changes."""
    env = demo_aws["environment"]
    name, password = sandbox.create_db_password_secret(moto_endpoint, env)

    assert (name, sandbox.create_db_password_secret(moto_endpoint, env)[1]) == (
        demo_aws["db_password_secret"], password,
    )  # fmt: skip
    assert sandbox.create_demo_repositories(moto_endpoint) == demo_aws["repositories"]
    ecr = boto3.client("ecr", endpoint_url=moto_endpoint, region_name=sandbox.REGION)
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert sorted(names) == sorted(sandbox.ECR_REPOSITORIES)
