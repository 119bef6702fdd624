"""ecs_rolling steps against a moto server holding fraud-detector's cluster."""

from __future__ import annotations

import boto3
import pytest

from deployments.runners.base import StepFailed
from deployments.runners.ecs import EcsRollingRunner

pytestmark = pytest.mark.slow


def ecs_client(endpoint: str):
    return boto3.client("ecs", endpoint_url=endpoint, region_name="ca-central-1")


def service(endpoint: str, cluster: str, name: str) -> dict:
    return ecs_client(endpoint).describe_services(cluster=cluster, services=[name])["services"][0]


def image_of(endpoint: str, task_definition: str) -> str:
    found = ecs_client(endpoint).describe_task_definition(taskDefinition=task_definition)
    return found["taskDefinition"]["containerDefinitions"][0]["image"]


@pytest.fixture
def config(demo_aws) -> dict:
    return {
        "cluster": demo_aws["cluster"],
        "services": ["fraud-api", "fraud-ml"],
        "timeout_seconds": 60,  # a rollout ends when done: a margin for a loaded machine
        "poll_seconds": 0.1,
    }


def test_it_registers_a_revision_with_the_release_images_and_waits_stable(
    make_ctx, config, demo_aws, moto_endpoint
):
    before = service(moto_endpoint, config["cluster"], "fraud-api")["taskDefinition"]
    ctx = make_ctx(config)

    outputs = EcsRollingRunner().run(ctx)

    records = {r["service"]: r for r in outputs["services"]}
    assert records["fraud-api"]["previous_task_definition"] == before
    assert records["fraud-api"]["task_definition"].endswith("-fraud-api:2")
    live = service(moto_endpoint, config["cluster"], "fraud-api")
    assert live["taskDefinition"] == records["fraud-api"]["task_definition"]
    assert live["runningCount"] == live["desiredCount"] == 2
    assert image_of(moto_endpoint, live["taskDefinition"]) == ctx.artifacts["fraud-api"]
    assert (
        image_of(moto_endpoint, records["fraud-ml"]["task_definition"]) == ctx.artifacts["fraud-ml"]
    )
    # The new revision keeps everything else about the task.
    definition = ecs_client(moto_endpoint).describe_task_definition(
        taskDefinition=live["taskDefinition"]
    )["taskDefinition"]
    assert definition["cpu"] == "512" and definition["networkMode"] == "awsvpc"
    # fraud-worker was not in the step.
    assert service(moto_endpoint, config["cluster"], "fraud-worker")["taskDefinition"].endswith(
        ":1"
    )
    assert "Stable: fraud-api, fraud-ml" in ctx.log.text


def test_a_rollback_restores_the_revision_recorded_when_the_target_last_succeeded(
    make_ctx, config, moto_endpoint
):
    runner = EcsRollingRunner()
    older = {s: f"123456789012.dkr.ecr.ca-central-1.amazonaws.com/{s}@sha256:" + "b" * 64
             for s in ("fraud-api", "fraud-ml", "fraud-worker")}  # fmt: skip
    target_outputs = runner.run(make_ctx(config, release_version="1.3.0", artifacts=older))
    runner.run(make_ctx(config))  # 1.4.0 goes out after it

    result = runner.rollback(
        make_ctx(config, release_version="1.3.0", artifacts=older, previous_outputs=target_outputs)
    )

    for record in target_outputs["services"]:
        live = service(moto_endpoint, config["cluster"], record["service"])
        assert live["taskDefinition"] == record["task_definition"]  # the very revision
        assert image_of(moto_endpoint, live["taskDefinition"]) == older[record["service"]]
    assert [r["service"] for r in result["services"]] == ["fraud-api", "fraud-ml"]
    assert all(r["restored"] for r in result["services"]) and result["rollback"]


def test_a_rollback_with_nothing_recorded_registers_the_targets_images(
    make_ctx, config, moto_endpoint
):
    """History Gantry did not make (or a revision deregistered since): the
    target release's own images go out, never the undone run's inverse."""
    runner = EcsRollingRunner()
    runner.run(make_ctx(config))
    older = {s: f"123456789012.dkr.ecr.ca-central-1.amazonaws.com/{s}@sha256:" + "c" * 64
             for s in ("fraud-api", "fraud-ml", "fraud-worker")}  # fmt: skip
    deregistered = "arn:aws:ecs:ca-central-1:123456789012:task-definition/nope:9"
    gone = {"services": [{"service": "fraud-api", "task_definition": deregistered}]}

    result = runner.rollback(
        make_ctx(config, release_version="1.2.0", artifacts=older, previous_outputs=gone)
    )

    for name in ("fraud-api", "fraud-ml"):
        live = service(moto_endpoint, config["cluster"], name)
        assert image_of(moto_endpoint, live["taskDefinition"]) == older[name]
    assert {r["service"]: r.get("restored") for r in result["services"]} == {
        "fraud-api": None,
        "fraud-ml": None,
    }


def test_it_fails_naming_a_missing_service(make_ctx, config):
    config["services"] = ["fraud-api", "fraud-nope"]

    with pytest.raises(StepFailed, match="fraud-nope not found") as failure:
        EcsRollingRunner().run(make_ctx(config))

    # fraud-api was already updated; the failure carries what rollback needs.
    assert failure.value.outputs["services"][0]["service"] == "fraud-api"


def test_it_fails_when_no_container_matches_the_release(make_ctx, config):
    with pytest.raises(StepFailed, match="container_artifacts"):
        EcsRollingRunner().run(make_ctx(config, artifacts={"other": "x@sha256:" + "0" * 64}))


def test_it_names_the_bad_key_in_the_config():
    runner = EcsRollingRunner()
    with pytest.raises(ValueError, match="^cluster"):
        runner.validate_config({"services": ["a"]})
    with pytest.raises(ValueError, match="^services"):
        runner.validate_config({"cluster": "c", "services": "fraud-api"})
    with pytest.raises(ValueError, match="^timeout_seconds"):
        runner.validate_config({"cluster": "c", "services": ["a"], "timeout_seconds": "soon"})
