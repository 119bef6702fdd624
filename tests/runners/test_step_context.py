"""StepContext: what a runner sees of a real deployment (deployments/engine.py),
and `${…}` references."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.engine import step_context
from deployments.models import Deployment
from deployments.runners.base import StepContext
from portal.cloud.errors import CloudError
from tests.conftest import env, image


@pytest.mark.django_db
def test_it_fills_the_context_from_a_deployment(release, tmp_path):
    staging = env(release.application, "staging")
    staging.variables = {"replicas": 3}
    staging.secret_variables = {"db_password": "correct-horse"}
    staging.health_urls = ["https://staging.fraud.example/health"]
    staging.aws_role_arn = "arn:aws:iam::123456789012:role/gantry-deploy"
    staging.kube_context = "staging-cluster"
    staging.save()
    deployment = Deployment(release=release, environment=staging, reason="test")
    lines = []

    ctx = step_context(
        deployment, {"k": "v"}, workdir=tmp_path, log=lambda t, s="stdout": lines.append(t)
    )

    assert ctx.environment_name == "staging" and ctx.release_version == "1.4.0"
    assert ctx.artifacts["fraud-api"] == image("fraud-api")
    assert ctx.secret_values == {"db_password": "correct-horse"}
    assert ctx.aws.region == "ca-central-1"
    assert ctx.aws.role_arn == "arn:aws:iam::123456789012:role/gantry-deploy"
    assert ctx.kube_api_client.context == "staging-cluster"
    assert ctx.expand("${var.replicas}/${secret.db_password}") == "3/correct-horse"
    ctx.log("hello")
    assert lines == ["hello"]


def test_it_resolves_references_recursively():
    ctx = StepContext(
        config={},
        workdir=Path("/tmp"),
        environment_name="staging",
        release_version="2.0.0",
        artifacts={"fraud-api": "repo@sha256:" + "a" * 64},
    )

    value = ctx.expand({"a": ["${environment}-${release.version}"], "b": "${artifact.fraud-api}"})

    assert value == {"a": ["staging-2.0.0"], "b": "repo@sha256:" + "a" * 64}
    assert ctx.expand(3) == 3


def test_it_names_an_unknown_reference():
    ctx = StepContext(config={}, workdir=Path("/tmp"))

    with pytest.raises(CloudError, match=r"\$\{secret.nope\}: there is no secret named 'nope'"):
        ctx.expand("${secret.nope}")
    with pytest.raises(CloudError, match="unknown reference"):
        ctx.expand("${release.__class__}")
