"""An admin's audited force-unlock of a Terraform state lock left by a dead run.

Terraform's S3 backend with DynamoDB locking, as teams run it in production,
here against the moto server: a lock item that a crashed `terraform apply`
left in the table makes the plan fail naming the lock; the admin releases it
from the deployment page; the next plan goes through.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from deployments import jobs
from deployments.choices import Status, StepStatus
from deployments.models import Deployment, LogLine
from deployments.runners.base import StepFailed
from deployments.runners.masking import Masker
from environments.models import Step
from portal.models import AuditEvent
from portal.roles import PolicyError
from tests.conftest import env
from tests.environments.ui import browser
from tests.runners.conftest import moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
BUCKET, TABLE, KEY = "fraud-detector-tfstate", "fraud-detector-tf-locks", "fraud-detector.tfstate"
HOLDER = "bob@ci-runner-7"


@pytest.fixture
def s3_module(tmp_path) -> Path:
    """The demo module with the S3 backend instead of the local one."""
    source = Path(settings.BASE_DIR) / "infra" / "terraform" / "fraud-detector" / "main.tf"
    module = tmp_path / "module"
    module.mkdir()
    text = source.read_text()
    assert 'backend "local" {}' in text
    (module / "main.tf").write_text(text.replace('backend "local" {}', 'backend "s3" {}'))
    return module


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    region = {"region_name": "ca-central-1", "endpoint_url": moto_endpoint}
    s3, dynamodb = boto3.client("s3", **region), boto3.client("dynamodb", **region)
    suffix = uuid.uuid4().hex[:8]
    bucket, table = f"{BUCKET}-{suffix}", f"{TABLE}-{suffix}"
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ca-central-1"}
    )
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
    )  # fmt: skip
    return {"endpoint": moto_endpoint, "bucket": bucket, "table": table, "dynamodb": dynamodb}


@pytest.fixture
def staging(catalog, aws, s3_module, terraform_cli_config, monkeypatch, tmp_path, settings):
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(terraform_cli_config))
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    staging = env(catalog, "staging")
    Step.objects.create(environment=staging, order=1, name="Terraform", kind="terraform", config={
        "path": str(s3_module),
        "variables": {"environment": "${environment}",
                      "images": {"fraud-api": "${artifact.fraud-api}"}},
        "backend_config": {
            "bucket": aws["bucket"], "key": KEY, "region": "ca-central-1",
            "dynamodb_table": aws["table"], "endpoint": aws["endpoint"],
            "dynamodb_endpoint": aws["endpoint"], "force_path_style": "true",
            "skip_credentials_validation": "true", "skip_metadata_api_check": "true",
        },
    })  # fmt: skip
    return staging


def leave_dead_lock(aws) -> str:
    """What a `terraform apply` killed mid-run leaves in the lock table."""
    lock_id = str(uuid.uuid4())
    info = {"ID": lock_id, "Operation": "OperationTypeApply", "Info": "", "Who": HOLDER,
            "Version": "1.0.3", "Created": "2026-11-30T22:14:05.123456Z",
            "Path": f"{aws['bucket']}/env:/staging/{KEY}"}  # fmt: skip
    aws["dynamodb"].put_item(
        TableName=aws["table"],
        Item={"LockID": {"S": f"{aws['bucket']}/env:/staging/{KEY}"},
              "Info": {"S": json.dumps(info)}},
    )  # fmt: skip
    return lock_id


@pytest.fixture
def locked(staging, release, users, aws):
    """A deployment whose plan failed on the dead lock."""
    # Create the workspace's state first, as the dead run's earlier applies had.
    first = Deployment.request(release, staging, users["alice"], "first plan")
    jobs.plan_deployment(first.pk)
    first.refresh_from_db()
    assert first.status == Status.AWAITING_APPROVAL, first.error
    first.cancel(users["alice"])
    lock_id = leave_dead_lock(aws)
    deployment = Deployment.request(release, staging, users["alice"], "plan behind a lock")
    jobs.plan_deployment(deployment.pk)
    deployment.refresh_from_db()
    yield deployment, lock_id
    shutil.rmtree(settings.DEPLOY_WORKDIR, ignore_errors=True)


def unlock_url(deployment) -> str:
    step = deployment.step_runs.get(phase="plan")
    return reverse("step-force-unlock", args=[deployment.pk, step.pk])


def test_it_fails_the_plan_naming_the_lock_and_keeps_its_details(locked):
    deployment, lock_id = locked

    assert deployment.status == Status.FAILED
    assert lock_id in deployment.error and HOLDER in deployment.error
    step = deployment.step_runs.get(phase="plan")
    assert step.status == StepStatus.FAILED
    assert step.outputs["lock"]["id"] == lock_id
    assert step.outputs["lock"]["who"] == HOLDER


def test_it_lets_an_admin_release_the_lock_with_a_reason_and_audits_it(
    locked, users, aws, release, staging
):
    deployment, lock_id = locked
    page = browser(users["erin"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert f"Force-unlock state lock {lock_id}" in page.content.decode()

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "ci-runner-7 was terminated mid-apply"}
    )

    assert response.status_code == 302
    assert aws["dynamodb"].scan(TableName=aws["table"])["Count"] <= 1  # only the state digest
    items = aws["dynamodb"].scan(TableName=aws["table"])["Items"]
    assert not any("Info" in item for item in items)
    event = AuditEvent.objects.get(action="terraform.force_unlocked")
    assert event.actor_name == "erin"
    assert event.after["lock_id"] == lock_id
    assert event.after["reason"] == "ci-runner-7 was terminated mid-apply"
    assert event.after["lock"]["who"] == HOLDER
    log = " ".join(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))
    assert f"State lock {lock_id} released." in log
    page = browser(users["erin"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert "Terraform state lock force-unlocked" in page.content.decode()  # the timeline
    # The next plan goes through.
    again = Deployment.request(release, staging, users["alice"], "after the unlock")
    jobs.plan_deployment(again.pk)
    again.refresh_from_db()
    assert again.status == Status.AWAITING_APPROVAL, again.error


def test_it_refuses_a_lock_already_released(locked, users, aws):
    deployment, lock_id = locked
    step = deployment.step_runs.get(phase="plan")
    # As a first force-unlock leaves it.
    step.outputs = {**step.outputs, "lock": {**step.outputs["lock"], "released_by": "erin"}}
    step.save(update_fields=["outputs"])

    with pytest.raises(PolicyError, match=f"Lock {lock_id} was already released by erin"):
        deployment.force_unlock_state(step, users["erin"], "again")

    assert any("Info" in item for item in aws["dynamodb"].scan(TableName=aws["table"])["Items"])
    assert not AuditEvent.objects.filter(action__startswith="terraform.force_unlock").exists()


def test_it_refuses_someone_who_is_not_an_admin_of_the_environment(locked, users, aws):
    deployment, _ = locked
    page = browser(users["bob"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert "Force-unlock state lock" not in page.content.decode()

    response = browser(users["bob"]).post(unlock_url(deployment), {"reason": "trust me"})

    assert response.status_code == 403
    assert any("Info" in item for item in aws["dynamodb"].scan(TableName=aws["table"])["Items"])
    assert not AuditEvent.objects.filter(action__startswith="terraform.force_unlock").exists()


def test_it_hides_the_deployment_from_an_outsider_and_sends_anonymous_to_sign_in(locked, users):
    deployment, _ = locked

    outsider = browser(users["mallory"]).post(unlock_url(deployment), {"reason": "x"})
    assert outsider.status_code == 404
    anonymous = Client().post(unlock_url(deployment), {"reason": "x"})
    assert anonymous.status_code == 302 and reverse("login") in anonymous["Location"]


def test_it_wants_a_reason_and_a_post(locked, users, aws):
    deployment, _ = locked

    response = browser(users["erin"]).post(unlock_url(deployment), {"reason": "  "}, follow=True)
    assert "Reason: This field is required." in response.content.decode()
    assert browser(users["erin"]).get(unlock_url(deployment)).status_code == 405
    assert any("Info" in item for item in aws["dynamodb"].scan(TableName=aws["table"])["Items"])


def test_it_refuses_while_a_deployment_runs_in_the_environment(locked, users, aws):
    deployment, _ = locked
    Deployment.objects.filter(pk=deployment.pk).update(status=Status.RUNNING)

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "looks dead"}, follow=True
    )

    assert "A deployment is running in" in response.content.decode()
    assert any("Info" in item for item in aws["dynamodb"].scan(TableName=aws["table"])["Items"])


def test_the_kept_lock_details_are_masked_like_the_log():
    """They come from the tool's stderr: an environment's secret in them is not stored."""
    exc = StepFailed(
        "state locked",
        outputs={"applied": True},
        lock={"id": "9f1c", "who": "deploy@ci-runner-7", "info": "token hunter2-very-secret"},
    )
    outputs = jobs.failure_outputs(exc, Masker({"DEPLOY_TOKEN": "hunter2-very-secret"}))
    assert outputs["applied"] is True
    assert outputs["lock"]["id"] == "9f1c"
    assert outputs["lock"]["who"] == "deploy@ci-runner-7"
    assert "hunter2-very-secret" not in outputs["lock"]["info"]
