"""Faults: the AWS endpoint unreachable mid-step (the test's own moto server
stopped while an ECS rollout waits), and the Kubernetes API answering 500s
or not answering at all mid-rollout (the FAKE API server's fault switch).

Required: a clear step failure naming the endpoint, after bounded retries
(portal/cloud/aws.py, portal/cloud/kube.py), well before the step's own
timeout; the environment is free afterwards.
"""

from __future__ import annotations

import time

import pytest

from deployments import sandbox
from deployments.choices import Status, StepStatus
from deployments.models import Deployment, LogLine
from environments.models import Step
from portal.cloud.aws import AWS_MAX_ATTEMPTS
from portal.cloud.kube import KUBE_RETRIES
from tests.conftest import env
from tests.faults.conftest import suite_database_url
from tests.faults.processes import portal_env, record
from tests.polling import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
STEP_TIMEOUT = 300  # the step's own limit, which the failure must come well before
FAILS_WITHIN = 60


def final_status(deployment: Deployment) -> str | None:
    status = Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)
    return None if status in (Status.QUEUED, Status.RUNNING) else status


def logged(deployment: Deployment, text: str) -> bool:
    return LogLine.objects.filter(deployment=deployment, text__contains=text).exists()


def test_an_unreachable_aws_endpoint_fails_the_step_naming_it(
    catalog, release, users, portal, redis_server, moto_server, tmp_path, monkeypatch
):
    for name, value in sandbox.FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    resources = sandbox.create_demo_aws(moto_server.url, "dev")
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Rolling update", kind="ecs_rolling",
                        config={"cluster": resources["cluster"], "services": ["fraud-api"],
                                "timeout_seconds": STEP_TIMEOUT, "poll_seconds": 1})  # fmt: skip
    portal.env = portal_env(
        database_url=suite_database_url(), redis_url=redis_server.url, workdir=tmp_path,
        AWS_ENDPOINT_URL=moto_server.url, **sandbox.FAKE_CREDENTIALS,
    )  # fmt: skip
    portal.worker()
    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
    # The rollout waits for tasks moto never starts: the step is polling.
    assert wait_for(lambda: logged(deployment, "0/2 running"), 90), portal.logs()

    stopped_at = time.monotonic()
    moto_server.stop()
    stop_took = time.monotonic() - stopped_at
    final = wait_for(lambda: final_status(deployment), STEP_TIMEOUT)
    took = time.monotonic() - stopped_at

    assert final == Status.FAILED, portal.logs()
    step = deployment.step_runs.get(phase="deploy")
    assert step.status == StepStatus.FAILED
    assert moto_server.url in step.error, step.error
    assert f"gave up after {AWS_MAX_ATTEMPTS} attempts" in step.error
    assert took <= FAILS_WITHIN, f"failed {took:.1f} s after AWS went away"
    assert not Deployment.objects.filter(environment=dev, status=Status.RUNNING).exists()
    record(
        "aws endpoint unreachable mid-step", step="ecs_rolling (waiting for stable)",
        step_failed_after_s=round(took, 1), moto_stop_took_s=round(stop_took, 1),
        step_timeout_s=STEP_TIMEOUT, attempts_per_call=AWS_MAX_ATTEMPTS, message=step.error,
    )  # fmt: skip


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_a_failing_kubernetes_api_fails_the_step_naming_it(
    fault, catalog, release, users, portal, redis_server, tmp_path
):
    api = sandbox.start_fake_kube_api(("dev",))
    try:
        namespace = "fraud-detector-dev"
        api.cluster.stall(namespace, "fraud-api")  # the rollout waits for pods: the step polls
        dev = env(catalog, "dev")
        config = {"namespace": "fraud-detector-${environment}", "deployments": ["fraud-api"],
                  "timeout_seconds": STEP_TIMEOUT, "poll_seconds": 1}  # fmt: skip
        Step.objects.create(
            environment=dev, order=1, name="Rolling update", kind="k8s_rolling", config=config
        )
        portal.env = portal_env(
            database_url=suite_database_url(), redis_url=redis_server.url, workdir=tmp_path,
            KUBE_API_URL=api.url,
        )  # fmt: skip
        portal.worker()
        deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
        assert wait_for(lambda: logged(deployment, "new replicas have been updated"), 90), (
            portal.logs()
        )

        if fault == "500":
            api.faults.fail(500)
        else:
            api.faults.hang()
        switched_at = time.monotonic()
        final = wait_for(lambda: final_status(deployment), STEP_TIMEOUT)
        took = time.monotonic() - switched_at
    finally:
        api.stop()

    assert final == Status.FAILED, portal.logs()
    step = deployment.step_runs.get(phase="deploy")
    assert api.url in step.error, step.error
    expected = "answered 500 Internal Server Error" if fault == "500" else "Read timed out"
    assert expected in step.error, step.error
    assert api.faults.hits == KUBE_RETRIES + 1  # one call, retried twice: bounded
    assert took <= FAILS_WITHIN, f"failed {took:.1f} s after the API turned bad"
    record(
        f"kubernetes api {fault}", step="k8s_rolling (following the rollout)",
        step_failed_after_s=round(took, 1), step_timeout_s=STEP_TIMEOUT,
        requests_spoiled=api.faults.hits, message=step.error,
    )  # fmt: skip
