"""The deploy engine end to end, with real RQ jobs on Redis (run by an
in-process burst worker), the real terraform binary, a moto server, and the
step runners: request → plan → approve → apply → ECS → bake → succeeded; a
fired alarm during the bake → automatic rollback; one-click rollback."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from django.conf import settings

from deployments.choices import Kind, Status, StepStatus
from deployments.models import Deployment, LogLine, Release
from deployments.rollback import request_rollback
from environments.models import Step
from portal.core.models import AuditEvent
from tests.conftest import env, image, work
from tests.runners.conftest import demo_aws, moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MODULE = str(Path(settings.BASE_DIR) / "infra" / "terraform" / "fraud-detector")
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


@pytest.fixture
def sandbox_env(monkeypatch, moto_endpoint, terraform_cli_config, tmp_path, settings):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(terraform_cli_config))
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    return tmp_path


@pytest.fixture
def staging(catalog, demo_aws, sandbox_env):
    """fraud-detector staging with seed 001/002's process: terraform, ECS, bake."""
    staging = env(catalog, "staging")
    state_dir = sandbox_env / "state"
    Step.objects.bulk_create([
        Step(environment=staging, order=1, name="Terraform", kind="terraform", config={
            "path": MODULE,
            "variables": {"environment": "${environment}", "release_version": "${release.version}",
                          "images": {s: f"${{artifact.{s}}}" for s in SERVICES}},
            "backend_config": {"workspace_dir": str(state_dir)},
        }),
        Step(environment=staging, order=2, name="ECS rolling update", kind="ecs_rolling", config={
            "cluster": demo_aws["cluster"], "services": ["fraud-api", "fraud-ml"],
            "timeout_seconds": 20, "poll_seconds": 0.1,
        }),
        Step(environment=staging, order=3, name="Bake", kind="bake", config={
            "duration_seconds": 0.5, "poll_seconds": 0.1,
            "cloudwatch": {"alarm_prefix": f"fraud-detector-{demo_aws['environment']}-"},
        }),
    ])  # fmt: skip
    return staging


def task_image(endpoint: str, cluster: str) -> str:
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="ca-central-1")
    service = ecs.describe_services(cluster=cluster, services=["fraud-api"])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    return definition["taskDefinition"]["containerDefinitions"][0]["image"]


def ship(release, staging, users, queues) -> Deployment:
    deployment = Deployment.request(release, staging, users["alice"], f"ship {release.version}")
    assert deployment.status == Status.PLANNING
    work(queues)  # the plan job
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    deployment.approve(users["bob"])
    work(queues)  # the deploy job (and, if it fails its bake, the rollback's jobs)
    deployment.refresh_from_db()
    return deployment


def second_release(catalog, users) -> Release:
    return Release.register(catalog, "1.5.0", {s: image(s, "b") for s in SERVICES}, users["alice"])


def test_it_plans_waits_for_approval_applies_and_succeeds(
    staging,
    release,
    users,
    queues,
    demo_aws,
    moto_endpoint,
):
    deployment = Deployment.request(release, staging, users["alice"], "ship 1.4.0")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    assert len(deployment.plan_sha256) == 64
    plan = deployment.step_runs.get(phase="plan")
    assert plan.outputs["plan_sha256"] == deployment.plan_sha256
    assert plan.outputs["resource_changes"]  # the diff approvers are shown

    deployment.approve(users["bob"], "plan reviewed")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED, deployment.error
    runs = list(deployment.step_runs.filter(phase="deploy").values_list("kind", "status"))
    assert runs == [("terraform", StepStatus.SUCCEEDED), ("ecs_rolling", StepStatus.SUCCEEDED),
                    ("bake", StepStatus.SUCCEEDED)]  # fmt: skip
    assert task_image(moto_endpoint, demo_aws["cluster"]) == release.artifact_map()["fraud-api"]
    text = "\n".join(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))
    assert "Apply complete!" in text
    seqs = list(LogLine.objects.filter(deployment=deployment).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    events = AuditEvent.objects.filter(
        target_id=str(deployment.pk), target_type="deployments.deployment"
    )
    actions = list(events.order_by("seq").values_list("action", flat=True))
    assert actions == [
        "deployment.requested", "deployment.planned", "deployment.policy_evaluated",
        "deployment.awaiting_approval",
        "deployment.approved", "deployment.queued", "deployment.started", "deployment.succeeded",
    ]  # fmt: skip


def test_an_alarm_during_the_bake_rolls_back_automatically(
    staging,
    release,
    users,
    queues,
    catalog,
    demo_aws,
    moto_endpoint,
):
    first = ship(release, staging, users, queues)
    assert first.status == Status.SUCCEEDED, first.error
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="ca-central-1")
    cloudwatch.set_alarm_state(
        AlarmName=demo_aws["alarms"][0], StateValue="ALARM", StateReason="5xx above 10"
    )
    bad = ship(second_release(catalog, users), staging, users, queues)
    assert bad.status == Status.FAILED
    assert demo_aws["alarms"][0] in bad.error
    rollback = Deployment.objects.get(rollback_of=bad)
    assert (rollback.kind, rollback.requested_by, rollback.release) == (
        Kind.ROLLBACK,
        None,
        release,
    )
    assert rollback.status == Status.SUCCEEDED, rollback.error
    # The service runs the first release's image again.
    assert task_image(moto_endpoint, demo_aws["cluster"]) == release.artifact_map()["fraud-api"]
    assert AuditEvent.objects.filter(action="deployment.rollback_started").exists()


def test_one_click_rollback_restores_the_previous_release(
    staging,
    release,
    users,
    queues,
    catalog,
    demo_aws,
    moto_endpoint,
):
    assert ship(release, staging, users, queues).status == Status.SUCCEEDED
    newer = second_release(catalog, users)
    assert ship(newer, staging, users, queues).status == Status.SUCCEEDED
    assert task_image(moto_endpoint, demo_aws["cluster"]) == newer.artifact_map()["fraud-api"]

    rollback = request_rollback(staging, users["alice"], "1.5.0 misbehaves")
    assert rollback.kind == Kind.ROLLBACK and rollback.release == release
    undone = Deployment.objects.get(release=newer, status=Status.SUCCEEDED)
    assert rollback.rollback_of == undone
    requested = AuditEvent.objects.get(action="deployment.requested", target_id=str(rollback.pk))
    assert requested.after["rollback_of"] == undone.pk and requested.after["kind"] == "rollback"
    work(queues)  # plan (staging rollbacks need no approval) and run
    rollback.refresh_from_db()
    assert rollback.status == Status.SUCCEEDED, rollback.error
    assert task_image(moto_endpoint, demo_aws["cluster"]) == release.artifact_map()["fraud-api"]
