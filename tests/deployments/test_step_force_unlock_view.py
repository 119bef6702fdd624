"""An admin's audited force-unlock of a Terraform state lock left by a dead run.

Terraform's S3 backend with DynamoDB locking, as teams run it in production,
here against the moto server: a lock item that a crashed `terraform apply`
left in the table makes the plan fail naming the lock; the admin asks for it
to be released from the deployment page; the force_unlock_state job (run here
by an in-process burst worker, as RQ runs it) releases it; the next plan goes
through.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments import jobs, state_lock
from deployments.choices import Status, StepStatus
from deployments.models import Deployment, LogLine
from deployments.runners.base import StepFailed
from environments.models import Step
from portal.cloud.masking import Masker
from portal.cloud.terraform import terraform_binary
from portal.core.models import AuditEvent
from portal.core.roles import PolicyError
from tests.conftest import env, work
from tests.environments.ui import browser, messages_of
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
    return {"endpoint": moto_endpoint, "bucket": bucket, "table": table, "dynamodb": dynamodb,
            "s3": s3}  # fmt: skip


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
        # The lock here is a dead run's: fail on it at once rather than wait
        # for it as for a live apply.
        "plan_lock_wait_seconds": 0,
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
    # The workspace's state, as the dead run's earlier applies left it. Put
    # there directly: a plan creating it would take one more lock, and under
    # load Terraform's SDK may retry a lock PutItem into the lock it just took.
    aws["s3"].put_object(
        Bucket=aws["bucket"], Key=f"env:/staging/{KEY}",
        Body=json.dumps({"version": 4, "terraform_version": "1.0.3", "serial": 1,
                         "lineage": str(uuid.uuid4()), "outputs": {}, "resources": []}),
    )  # fmt: skip
    lock_id = leave_dead_lock(aws)
    deployment = Deployment.request(release, staging, users["alice"], "plan behind a lock")
    jobs.plan_deployment(deployment.pk)
    deployment.refresh_from_db()
    yield deployment, lock_id
    shutil.rmtree(settings.DEPLOY_WORKDIR, ignore_errors=True)


@pytest.fixture
def high(locked, queues):
    """The high queue, where the force-unlock job goes, with every queue
    emptied of the plan jobs the fixtures enqueued (they ran already)."""
    for queue in queues:
        queue.empty()
    return queues[0]


def unlock_url(deployment) -> str:
    step = deployment.step_runs.get(phase="plan")
    return reverse("step-force-unlock", args=[deployment.pk, step.pk])


def lock_held(aws) -> bool:
    return any("Info" in item for item in aws["dynamodb"].scan(TableName=aws["table"])["Items"])


def log_of(deployment) -> str:
    return "\n".join(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))


def queued_deployment(release, staging, users) -> Deployment:
    """Another deployment of the environment, waiting for a worker."""
    return Deployment.objects.create(
        release=release, environment=staging, requested_by=users["alice"], reason="next",
        status=Status.QUEUED, queued_at=timezone.now(),
    )  # fmt: skip


def test_it_fails_the_plan_naming_the_lock_and_keeps_its_details(locked):
    deployment, lock_id = locked

    assert deployment.status == Status.FAILED
    assert lock_id in deployment.error and HOLDER in deployment.error
    step = deployment.step_runs.get(phase="plan")
    assert step.status == StepStatus.FAILED
    assert step.outputs["lock"]["id"] == lock_id
    assert step.outputs["lock"]["who"] == HOLDER


def test_it_lets_an_admin_release_the_lock_with_a_reason_and_audits_it(
    locked, users, aws, release, staging, high, queues
):
    deployment, lock_id = locked
    page = browser(users["erin"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert f"Force-unlock state lock {lock_id}" in page.content.decode()
    lines_before = LogLine.objects.filter(deployment=deployment).count()

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "ci-runner-7 was terminated mid-apply"}, follow=True
    )

    # The request only checks, records and enqueues: Terraform has not run.
    assert response.status_code == 200
    assert "Force-unlock requested: it runs in the background" in messages_of(response)[0]
    assert [job.func_name for job in high.get_jobs()] == ["deployments.jobs.force_unlock_state"]
    assert lock_held(aws)
    assert LogLine.objects.filter(deployment=deployment).count() == lines_before
    requested = AuditEvent.objects.get(action="terraform.force_unlock_requested")
    assert requested.actor_name == "erin"
    assert requested.after["lock_id"] == lock_id
    assert requested.after["reason"] == "ci-runner-7 was terminated mid-apply"
    assert "Force-unlock in progress: requested by erin" in response.content.decode()
    assert f"Force-unlock state lock {lock_id}" not in response.content.decode()
    assert not AuditEvent.objects.filter(action="terraform.force_unlocked").exists()

    work(queues)

    assert not lock_held(aws)
    event = AuditEvent.objects.get(action="terraform.force_unlocked")
    assert event.actor_name == "erin"
    assert event.seq > requested.seq
    assert event.after["lock_id"] == lock_id
    assert event.after["reason"] == "ci-runner-7 was terminated mid-apply"
    assert event.after["lock"]["who"] == HOLDER
    log = log_of(deployment)
    assert f"erin force-unlocks Terraform state lock {lock_id}" in log
    assert f"State lock {lock_id} released." in log
    step = deployment.step_runs.get(phase="plan")
    assert step.outputs["lock"]["released_by"] == "erin"
    assert step.unlock_requested_at is None and step.unlock_requested_by is None
    page = browser(users["erin"]).get(reverse("deployment-detail", args=[deployment.pk]))
    html = page.content.decode()
    assert "Terraform state lock force-unlocked" in html  # the timeline
    assert "Terraform force-unlock requested" in html
    assert f"State lock {lock_id} was released by erin." in html
    assert "Force-unlock in progress" not in html
    # The next plan goes through.
    again = Deployment.request(release, staging, users["alice"], "after the unlock")
    jobs.plan_deployment(again.pk)
    again.refresh_from_db()
    assert again.status == Status.AWAITING_APPROVAL, again.error


def test_the_step_list_polls_while_the_force_unlock_is_in_progress(locked, users, high, queues):
    deployment, _ = locked
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})
    steps_url = reverse("deployment-steps", args=[deployment.pk])

    pending = browser(users["dave"]).get(steps_url).content.decode()
    assert "Force-unlock in progress: requested by erin" in pending
    assert f'hx-get="{steps_url}" hx-trigger="every 3s"' in pending

    work(queues)
    done = browser(users["dave"]).get(steps_url).content.decode()
    assert "was released by erin" in done
    assert "hx-trigger" not in done


def test_it_refuses_a_second_request_while_one_is_pending(locked, users, aws, high, queues):
    deployment, lock_id = locked
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "clicked again"}, follow=True
    )

    assert response.status_code == 200
    (message,) = messages_of(response)
    assert message.startswith(f"erin already asked to force-unlock lock {lock_id} at ")
    assert "it is in progress and its result will appear on this page" in message
    assert high.count == 1
    assert AuditEvent.objects.filter(action="terraform.force_unlock_requested").count() == 1
    work(queues)
    assert not lock_held(aws)
    assert AuditEvent.objects.filter(action="terraform.force_unlocked").count() == 1
    assert "runner gone" in log_of(deployment) and "clicked again" not in log_of(deployment)


def test_a_request_whose_job_was_lost_may_be_made_again(locked, users, high, queues):
    """Past the high queue's job timeout no job can still be at it."""
    deployment, _ = locked
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})
    high.empty()  # e.g. Redis lost it
    step = deployment.step_runs.get(phase="plan")
    step.unlock_requested_at -= timedelta(seconds=settings.RQ_QUEUES["high"]["DEFAULT_TIMEOUT"])
    step.save(update_fields=["unlock_requested_at"])

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "the first job was lost"}, follow=True
    )

    assert messages_of(response)[0].startswith("Force-unlock requested")
    assert high.count == 1
    work(queues)
    assert AuditEvent.objects.get(action="terraform.force_unlocked").after["reason"] == (
        "the first job was lost"
    )


def test_the_job_refuses_when_a_deployment_started_after_the_request(
    locked, users, aws, release, staging, high, queues
):
    deployment, lock_id = locked
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})
    other = queued_deployment(release, staging, users)
    assert other.start("worker-2:4242")

    work(queues)

    assert lock_held(aws)
    failed = AuditEvent.objects.get(action="terraform.force_unlock_failed")
    assert failed.actor_name == "erin"
    assert failed.after["lock_id"] == lock_id
    assert failed.after["error"].startswith("A deployment is running in fraud-detector/staging")
    assert not AuditEvent.objects.filter(action="terraform.force_unlocked").exists()
    assert "Force-unlock failed: A deployment is running in fraud-detector/staging" in log_of(
        deployment
    )
    step = deployment.step_runs.get(phase="plan")
    assert step.unlock_requested_at is None  # the admin may ask again once the run is over
    html = browser(users["erin"]).get(reverse("deployment-detail", args=[deployment.pk]))
    html = html.content.decode()
    assert "The last force-unlock failed: A deployment is running in fraud-detector/staging" in html
    assert f"Force-unlock state lock {lock_id}" in html


def test_running_the_job_twice_is_harmless(locked, users, aws, high, queues):
    deployment, _ = locked
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})
    (job,) = high.get_jobs()
    work(queues)
    lines = LogLine.objects.filter(deployment=deployment).count()

    assert jobs.force_unlock_state(*job.args) == "no force-unlock requested"

    assert LogLine.objects.filter(deployment=deployment).count() == lines
    assert AuditEvent.objects.filter(action__startswith="terraform.force_unlock").count() == 2
    assert not lock_held(aws)


def test_no_deployment_starts_while_terraform_force_unlocks(
    locked, users, aws, release, staging, high, tmp_path, monkeypatch
):
    """The job holds the environment row lock from its last check through
    `terraform force-unlock`; Deployment.start takes that lock too, so a run
    that wants to start then waits, and a second request is told at once."""
    deployment, _ = locked
    started_unlock = tmp_path / "force-unlock-started"
    finish_unlock = tmp_path / "force-unlock-may-finish"
    # The real binary, held at `force-unlock` until the test has acted (not for a
    # fixed time, which a loaded machine could overrun); at most 60 s, if it fails.
    slow = tmp_path / "terraform"
    slow.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = force-unlock ]; then touch {started_unlock}; n=0; '
        f"while [ ! -e {finish_unlock} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; fi\n"
        f'exec {terraform_binary()} "$@"\n'
    )
    slow.chmod(0o755)
    monkeypatch.setenv("TERRAFORM_BIN", str(slow))
    other = queued_deployment(release, staging, users)
    browser(users["erin"]).post(unlock_url(deployment), {"reason": "runner gone"})
    (job,) = high.get_jobs()
    results = {}

    def run(name, call) -> None:
        try:
            results[name] = call()
        finally:
            connections.close_all()

    unlocking = threading.Thread(
        target=run, args=("job", lambda: jobs.force_unlock_state(*job.args))
    )
    unlocking.start()
    deadline = time.monotonic() + 60
    while not started_unlock.exists() and unlocking.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started_unlock.exists(), results
    starting = threading.Thread(target=run, args=("start", lambda: other.start("worker-2:1")))
    starting.start()
    try:
        response = browser(users["erin"]).post(
            unlock_url(deployment), {"reason": "again"}, follow=True
        )
        starting.join(timeout=1)

        assert "fraud-detector/staging is busy right now" in messages_of(response)[0]
        assert unlocking.is_alive() and starting.is_alive()  # the run waits for the unlock
    finally:
        finish_unlock.touch()
    unlocking.join(timeout=60)
    starting.join(timeout=60)
    assert results == {"job": "unlocked", "start": True}
    actions = list(
        AuditEvent.objects.filter(action__in=["terraform.force_unlocked", "deployment.started"])
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["terraform.force_unlocked", "deployment.started"]
    assert not lock_held(aws)


def test_it_refuses_a_lock_already_released(locked, users, aws):
    deployment, lock_id = locked
    step = deployment.step_runs.get(phase="plan")
    # As a first force-unlock leaves it.
    step.outputs = {**step.outputs, "lock": {**step.outputs["lock"], "released_by": "erin"}}
    step.save(update_fields=["outputs"])

    with pytest.raises(PolicyError, match=f"Lock {lock_id} was already released by erin"):
        state_lock.request_force_unlock(deployment, step, users["erin"], "again")

    assert lock_held(aws)
    assert not AuditEvent.objects.filter(action__startswith="terraform.force_unlock").exists()


def test_it_refuses_someone_who_is_not_an_admin_of_the_environment(locked, users, aws, high):
    deployment, _ = locked
    page = browser(users["bob"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert "Force-unlock state lock" not in page.content.decode()

    response = browser(users["bob"]).post(unlock_url(deployment), {"reason": "trust me"})

    assert response.status_code == 403
    assert high.count == 0
    assert lock_held(aws)
    assert not AuditEvent.objects.filter(action__startswith="terraform.force_unlock").exists()
    assert deployment.step_runs.get(phase="plan").unlock_requested_at is None


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
    assert lock_held(aws)


def test_it_refuses_while_a_deployment_runs_in_the_environment(
    locked, users, aws, release, staging, high
):
    deployment, _ = locked
    assert queued_deployment(release, staging, users).start("worker-2:4242")

    response = browser(users["erin"]).post(
        unlock_url(deployment), {"reason": "looks dead"}, follow=True
    )

    assert response.status_code == 200
    assert messages_of(response) == [
        "A deployment is running in fraud-detector/staging: the lock may be its own. "
        "Wait for it or cancel it first."
    ]
    assert high.count == 0
    assert lock_held(aws)
    assert not AuditEvent.objects.filter(action__startswith="terraform.force_unlock").exists()


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
