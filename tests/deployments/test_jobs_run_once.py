"""The deploy engine's jobs act once per deployment: RQ may deliver a job
twice (a retry, a re-enqueue by the housekeeping), and the second delivery
must find the row past its state and do nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from deployments import jobs
from deployments.choices import Status
from deployments.models import Deployment, LogLine, StepRun
from environments.models import Step
from portal.core.models import AuditEvent
from tests.conftest import env
from tests.runners.conftest import terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MODULE = str(Path(settings.BASE_DIR) / "infra" / "terraform" / "fraud-detector")


@pytest.fixture
def workdir(tmp_path, settings):
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    return tmp_path


def trail(deployment: Deployment) -> dict:
    """Everything a run leaves behind, to compare before and after a second call."""
    return {
        "step_runs": list(StepRun.objects.filter(deployment=deployment).values_list(
            "pk", "phase", "status", "started_at", "finished_at")),
        "log_lines": LogLine.objects.filter(deployment=deployment).count(),
        "events": list(AuditEvent.objects.filter(target_id=str(deployment.pk)).order_by(
            "seq").values_list("action", flat=True)),
    }  # fmt: skip


def test_a_second_run_job_runs_no_step_again(catalog, release, users, queues, workdir):
    dev = env(catalog, "dev")  # no approvals: queued at once
    marker = workdir / "runs.txt"
    Step.objects.create(
        environment=dev, order=1, name="Migrate", kind="command",
        config={"argv": ["sh", "-c", f"echo ran >> {marker}; echo migrated"]},
    )  # fmt: skip
    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")

    assert jobs.run_deployment(deployment.pk) == Status.SUCCEEDED
    before = trail(deployment)
    assert before["events"].count("deployment.started") == 1
    assert [s[1:3] for s in before["step_runs"]] == [("deploy", "succeeded")]

    assert jobs.run_deployment(deployment.pk) == "not queued"

    assert trail(deployment) == before
    assert marker.read_text() == "ran\n"  # the command itself ran once
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED


def test_a_second_plan_job_plans_nothing_again(
    catalog,
    release,
    users,
    queues,
    workdir,
    terraform_cli_config,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(terraform_cli_config))
    staging = env(catalog, "staging")  # one approval: planned, then awaiting approval
    Step.objects.create(
        environment=staging, order=1, name="Terraform", kind="terraform", config={
            "path": MODULE,
            "variables": {"environment": "${environment}", "release_version": "${release.version}"},
            "backend_config": {"workspace_dir": str(workdir / "state")},
        },
    )  # fmt: skip
    deployment = Deployment.request(release, staging, users["alice"], "Bedrock timeout fix")
    assert deployment.status == Status.PLANNING

    assert jobs.plan_deployment(deployment.pk) == Status.AWAITING_APPROVAL
    deployment.refresh_from_db()
    plan_sha256, before = deployment.plan_sha256, trail(deployment)
    assert before["events"].count("deployment.planned") == 1

    assert jobs.plan_deployment(deployment.pk) == "nothing to plan"

    assert trail(deployment) == before
    deployment.refresh_from_db()
    assert (deployment.status, deployment.plan_sha256) == (Status.AWAITING_APPROVAL, plan_sha256)
