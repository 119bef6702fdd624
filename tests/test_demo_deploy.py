"""The demo's promise: `make run` seeds fraud-detector, and its staging process
(seed 001/002's runbook: terraform → rds_snapshot → ecs_rolling → http_check →
bake) runs to `succeeded` against the sandbox with one approval.

Real pieces throughout: `seed_demo`, the sandbox (moto server, the Terraform
provider mirror, the FAKE Kubernetes API and the STUB of the deployed API),
RQ jobs on Redis run by an in-process burst worker, the real terraform binary.
"""

from __future__ import annotations

import json
import urllib.request
from io import StringIO
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command

from deployments import sandbox as demo_sandbox
from deployments.choices import OPEN_STATUSES, Status, StepStatus
from deployments.demo import DEMO_BAKE_SECONDS, ECR, image_ref
from deployments.models import Deployment, LogLine, Release
from environments.choices import StepKind
from environments.models import Environment, Step
from portal.core.models import AuditEvent
from tests.conftest import work

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def sandbox_once(tmp_path_factory):
    """moto keeps its resources per process: the demo's are created once a module."""
    sandbox = demo_sandbox.start(tmp_path_factory.mktemp("sandbox"), ("staging",))
    yield sandbox
    sandbox.stop()


@pytest.fixture
def running_sandbox(sandbox_once, tmp_path, monkeypatch, settings):
    """What scripts/run.sh starts (`python -m deployments.sandbox`), with its
    settings in the environment as run.sh sources them."""
    for key, value in sandbox_once.settings().items():
        monkeypatch.setenv(key, value)
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    return sandbox_once


@pytest.fixture
def demo(running_sandbox, queues, tmp_path) -> Environment:
    """The seeded demo; returns fraud-detector's staging environment. The
    seed's open production request is planned by the first `work()`, before
    staging's plan, as the worker of `make run` does."""
    call_command("seed_demo", stdout=StringIO())
    # Only change to the seeded processes: Terraform state (one directory per
    # environment, as seeded) under this test's directory, not the checkout's var/.
    for step in Step.objects.filter(kind=StepKind.TERRAFORM):
        seeded = Path(step.config["backend_config"]["workspace_dir"])
        step.config["backend_config"]["workspace_dir"] = str(tmp_path / "tfstate" / seeded.name)
        step.save(update_fields=["config"])
    return Environment.objects.get(application__slug="fraud-detector", slug="staging")


def ecs_image(endpoint: str, service: str) -> str:
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=demo_sandbox.REGION)
    found = ecs.describe_services(cluster="fraud-detector-staging", services=[service])
    definition = ecs.describe_task_definition(taskDefinition=found["services"][0]["taskDefinition"])
    return definition["taskDefinition"]["containerDefinitions"][0]["image"]


def test_it_points_the_demo_health_checks_at_the_sandbox_stub(demo, running_sandbox):
    base = demo.variables["api_base_url"]
    assert base == f"{running_sandbox.api_url}/fraud-detector/staging"
    health = demo.steps.get(kind=StepKind.HTTP_CHECK).config
    assert health["urls"] == ["${var.api_base_url}/health", "${var.api_base_url}/health/ready"]
    with urllib.request.urlopen(f"{base}/health/live", timeout=5) as answer:
        assert json.load(answer)["status"] == "ok"
    request = urllib.request.Request(
        f"{base}/predict", data=json.dumps(health["smoke"]["json"]).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert 0 <= json.load(answer)["fraud_probability"] <= 1
    bake = demo.steps.get(kind=StepKind.BAKE).config
    assert bake["duration_seconds"] == DEMO_BAKE_SECONDS


def test_it_holds_the_platform_deployments_in_the_fake_kubernetes_api(demo, running_sandbox):
    with urllib.request.urlopen(
        f"{running_sandbox.kube_api_url}/apis/apps/v1/namespaces/fintech-ai-staging/deployments",
        timeout=5,
    ) as answer:
        names = sorted(item["metadata"]["name"] for item in json.load(answer)["items"])
    assert names == ["api-gateway", "frontend", "ml-service"]


def test_it_runs_fraud_detectors_staging_process_to_succeeded(demo, running_sandbox, queues):
    from django.contrib.auth.models import User

    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    application = demo.application
    artifacts = {
        s: image_ref(ECR, s, "1.4.1") for s in application.services.values_list("slug", flat=True)
    }
    # CI pushes the images first: the demo checks every digest against its ECR.
    for ref in artifacts.values():
        assert demo_sandbox.put_demo_image(running_sandbox.aws_endpoint_url, ref, tag="1.4.1")
    release = Release.register(application, "1.4.1", artifacts, alice, notes="Demo hotfix")

    deployment = Deployment.request(release, demo, alice, "Demo: ship 1.4.1 to staging")
    assert deployment.status == Status.PLANNING
    assert [check["found"] for check in deployment.image_checks] == [True, True, True]
    work(queues)  # the plan jobs: the seed's production request, then this one
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    assert deployment.required_approvals == 1
    # Production's workspace was planned first in its own state directory.
    production = Deployment.objects.get(
        environment__application=demo.application,
        environment__slug="production",
        status__in=OPEN_STATUSES,
    )
    assert production.status == Status.AWAITING_APPROVAL, production.error

    deployment.approve(bob, "Plan reviewed")
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED
    work(queues)  # the deploy job
    deployment.refresh_from_db()

    assert deployment.status == Status.SUCCEEDED, deployment.error
    runs = deployment.step_runs.filter(phase="deploy").order_by("order")
    assert [(r.kind, r.status) for r in runs] == [
        (StepKind.TERRAFORM, StepStatus.SUCCEEDED),
        (StepKind.RDS_SNAPSHOT, StepStatus.SUCCEEDED),
        (StepKind.ECS_ROLLING, StepStatus.SUCCEEDED),
        (StepKind.HTTP_CHECK, StepStatus.SUCCEEDED),
        (StepKind.BAKE, StepStatus.SUCCEEDED),
    ]
    http = runs.get(kind=StepKind.HTTP_CHECK).outputs
    base = demo.variables["api_base_url"]
    assert http["checked"] == {f"{base}/health": 200, f"{base}/health/ready": 200}
    assert http["smoke"] == {"url": f"{base}/predict", "status": 200}
    assert runs.get(kind=StepKind.BAKE).outputs["duration_seconds"] == DEMO_BAKE_SECONDS
    for service, image in artifacts.items():
        assert ecs_image(running_sandbox.aws_endpoint_url, service) == image
    text = "\n".join(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))
    assert "Apply complete!" in text
    assert AuditEvent.objects.filter(
        action="deployment.succeeded", target_id=str(deployment.pk)
    ).exists()
