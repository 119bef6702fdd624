"""ecs_blue_green steps: idle colour updated, targets checked, listener switched."""

from __future__ import annotations

import boto3
import pytest

from deployments.runners.base import StepFailed
from deployments.runners.ecs import EcsBlueGreenRunner

pytestmark = pytest.mark.slow


def listener_weights(endpoint: str, listener_arn: str) -> dict[str, int]:
    elb = boto3.client("elbv2", endpoint_url=endpoint, region_name="ca-central-1")
    action = elb.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0]["DefaultActions"][
        0
    ]
    return {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}


@pytest.fixture
def config(demo_aws) -> dict:
    env = demo_aws["environment"]
    return {
        "cluster": demo_aws["cluster"],
        "service": "fraud-api",
        "blue": {"service": "fraud-api-blue", "target_group": f"fraud-api-{env}-blue"},
        "green": {"service": "fraud-api-green", "target_group": f"fraud-api-{env}-green"},
        "load_balancer": demo_aws["load_balancer"],
        "listener_port": 80,
        "weights": [10, 50, 100],
        "pause_seconds": 0.05,
        "timeout_seconds": 60,  # a rollout ends when done: a margin for a loaded machine
        "poll_seconds": 0.05,
    }


def test_it_deploys_to_the_idle_colour_and_shifts_traffic_in_steps(
    make_ctx, config, demo_aws, moto_endpoint
):
    blue, green = demo_aws["target_groups"]["blue"], demo_aws["target_groups"]["green"]
    ctx = make_ctx(config)

    outputs = EcsBlueGreenRunner().run(ctx)

    assert outputs["previous_colour"] == "blue" and outputs["colour"] == "green"
    assert outputs["previous_weights"] == {blue: 100, green: 0}
    assert listener_weights(moto_endpoint, demo_aws["listener_arn"]) == {green: 100, blue: 0}
    shifts = [line for _, _, line in ctx.log.lines if line.startswith("Listener weights")]
    assert len(shifts) == 3
    assert "10%" in shifts[0] and "50%" in shifts[1]
    # A pause after each partial shift, none after the last: traffic holds at
    # 10 % and 50 % before the next step.
    lines = [line for _, _, line in ctx.log.lines]
    holds = [line for line in lines if line.startswith("Holding at")]
    assert holds == ["Holding at 10% for 0.05 s.", "Holding at 50% for 0.05 s."]
    assert lines.index(holds[0]) < lines.index(shifts[1]) and lines.index(holds[1]) < lines.index(
        shifts[2]
    )
    ecs = boto3.client("ecs", endpoint_url=moto_endpoint, region_name="ca-central-1")
    green_service = ecs.describe_services(cluster=config["cluster"], services=["fraud-api-green"])[
        "services"
    ][0]
    assert green_service["taskDefinition"] == outputs["task_definition"]
    definition = ecs.describe_task_definition(taskDefinition=outputs["task_definition"])
    assert (
        definition["taskDefinition"]["containerDefinitions"][0]["image"]
        == ctx.artifacts["fraud-api"]
    )


OLDER = {s: f"123456789012.dkr.ecr.ca-central-1.amazonaws.com/{s}@sha256:" + "b" * 64
         for s in ("fraud-api", "fraud-ml", "fraud-worker")}  # fmt: skip


def live_image(endpoint: str, cluster: str, service: str) -> str:
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="ca-central-1")
    arn = ecs.describe_services(cluster=cluster, services=[service])["services"][0][
        "taskDefinition"
    ]
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return definition["containerDefinitions"][0]["image"]


def test_a_rollback_switches_to_the_colour_that_still_runs_the_target(
    make_ctx, config, demo_aws, moto_endpoint
):
    runner = EcsBlueGreenRunner()
    target = runner.run(make_ctx(config, release_version="1.3.0", artifacts=OLDER))  # green
    runner.run(make_ctx(config))  # 1.4.0 on blue

    result = runner.rollback(
        make_ctx(config, release_version="1.3.0", artifacts=OLDER, previous_outputs=target)
    )

    blue, green = demo_aws["target_groups"]["blue"], demo_aws["target_groups"]["green"]
    assert listener_weights(moto_endpoint, demo_aws["listener_arn"]) == {blue: 0, green: 100}
    assert result["colour"] == "green" and result["switched"]
    assert live_image(moto_endpoint, config["cluster"], "fraud-api-green") == OLDER["fraud-api"]


def test_a_rollback_without_a_recorded_colour_deploys_the_targets_images(
    make_ctx, config, demo_aws, moto_endpoint
):
    runner = EcsBlueGreenRunner()
    runner.run(make_ctx(config))  # green runs 1.4.0

    result = runner.rollback(make_ctx(config, release_version="1.3.0", artifacts=OLDER))

    blue, green = demo_aws["target_groups"]["blue"], demo_aws["target_groups"]["green"]
    assert listener_weights(moto_endpoint, demo_aws["listener_arn"]) == {blue: 100, green: 0}
    assert result["colour"] == "blue" and result["rollback"]
    assert live_image(moto_endpoint, config["cluster"], "fraud-api-blue") == OLDER["fraud-api"]


def test_it_deploys_to_blue_next_time(make_ctx, config, demo_aws, moto_endpoint):
    runner = EcsBlueGreenRunner()
    runner.run(make_ctx(config))

    outputs = runner.run(make_ctx(config))

    assert outputs["colour"] == "blue"
    blue, green = demo_aws["target_groups"]["blue"], demo_aws["target_groups"]["green"]
    assert listener_weights(moto_endpoint, demo_aws["listener_arn"]) == {blue: 100, green: 0}


def test_it_keeps_traffic_on_the_live_colour_when_idle_targets_are_unhealthy(
    make_ctx, config, demo_aws, moto_endpoint
):
    elb = boto3.client("elbv2", endpoint_url=moto_endpoint, region_name="ca-central-1")
    green = demo_aws["target_groups"]["green"]
    targets = elb.describe_target_health(TargetGroupArn=green)["TargetHealthDescriptions"]
    elb.deregister_targets(
        TargetGroupArn=green, Targets=[{"Id": t["Target"]["Id"]} for t in targets]
    )
    config["timeout_seconds"] = 1

    with pytest.raises(StepFailed, match="is not healthy") as failure:
        EcsBlueGreenRunner().run(make_ctx(config))

    blue = demo_aws["target_groups"]["blue"]
    assert listener_weights(moto_endpoint, demo_aws["listener_arn"]) == {blue: 100, green: 0}
    assert failure.value.outputs["previous_weights"] == {blue: 100, green: 0}


def test_it_names_the_bad_key_in_the_config(config):
    runner = EcsBlueGreenRunner()
    with pytest.raises(ValueError, match="^weights"):
        runner.validate_config({**config, "weights": [50, 10]})
    with pytest.raises(ValueError, match="^green.target_group"):
        runner.validate_config({**config, "green": {"service": "fraud-api-green"}})
    with pytest.raises(ValueError, match="^listener_arn"):
        runner.validate_config({k: v for k, v in config.items() if k != "load_balancer"})
