"""Drift: what runs against what Gantry deployed. Made for real: an ECS service
changed with boto3 behind Gantry's back (moto server), a Kubernetes Deployment
patched through the official client (the FAKE Kubernetes API), Terraform state
edited by hand (the real terraform binary plans against it)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import boto3
import pytest
from django.urls import reverse
from kubernetes import client

from deployments import drift
from deployments.choices import DriftState, NotificationEvent, Status
from deployments.models import EnvironmentDrift, Notification
from deployments.models import drift as drift_model
from environments.models import Step
from portal.core.models import AuditEvent
from tests.api.conftest import api  # noqa: F401
from tests.conftest import env, image, work
from tests.deployments.test_engine_flow import (  # noqa: F401
    sandbox_env,
    second_release,
    ship,
    staging,
)
from tests.runners.conftest import (  # noqa: F401
    demo_aws,
    kube_api,
    moto_endpoint,
    terraform_cli_config,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
OUTSIDER = "docker.io/someone/fraud-api@sha256:" + "e" * 64


def change_ecs_image(endpoint: str, cluster: str, service: str, new_image: str) -> None:
    """What `aws ecs update-service` with a hand-made revision does."""
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="ca-central-1")
    found = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=found["taskDefinition"])
    task = definition["taskDefinition"]
    containers = [{**c, "image": new_image} for c in task["containerDefinitions"]]
    registered = ecs.register_task_definition(
        family=task["family"], containerDefinitions=containers,
        requiresCompatibilities=task.get("requiresCompatibilities", []),
        networkMode=task.get("networkMode", "awsvpc"), cpu=task.get("cpu", "256"),
        memory=task.get("memory", "512"),
    )["taskDefinition"]  # fmt: skip
    ecs.update_service(
        cluster=cluster, service=service, taskDefinition=registered["taskDefinitionArn"]
    )


def test_an_ecs_service_changed_outside_gantry_is_drift_until_a_deploy(
    release,
    staging,
    users,
    queues,
    moto_endpoint,
    demo_aws,  # noqa: F811
):
    assert ship(release, staging, users, queues).status == Status.SUCCEEDED
    drift.check(staging.pk)
    assert EnvironmentDrift.objects.get(environment=staging).state == DriftState.IN_SYNC

    change_ecs_image(moto_endpoint, demo_aws["cluster"], "fraud-api", OUTSIDER)
    drift.check_runtime(staging.pk)

    found = EnvironmentDrift.objects.get(environment=staging)
    assert found.state == DriftState.DRIFTED
    assert found.items == [{
        "kind": "service", "name": f"{demo_aws['cluster']}/fraud-api/fraud-api",
        "expected": image("fraud-api"), "actual": OUTSIDER,
    }]  # fmt: skip
    event = AuditEvent.objects.get(action="environment.drift_changed")
    assert (event.before["state"], event.after["state"]) == ("in_sync", "drifted")
    assert Notification.objects.filter(event=NotificationEvent.DRIFT).exists()

    # The next deployment sets every image: the drift it covers is gone.
    assert ship(second_release(staging.application, users), staging, users, queues).status == (
        Status.SUCCEEDED
    )
    assert EnvironmentDrift.objects.get(environment=staging).state == DriftState.IN_SYNC
    drift.check_runtime(staging.pk)  # and a real look agrees
    assert EnvironmentDrift.objects.get(environment=staging).state == DriftState.IN_SYNC


def test_terraform_state_edited_by_hand_is_drift_with_the_addresses(
    release,
    staging,
    users,
    queues,
    sandbox_env,  # noqa: F811
):
    assert ship(release, staging, users, queues).status == Status.SUCCEEDED
    states = list(Path(sandbox_env / "state").rglob("*.tfstate"))
    assert states, "the Terraform step keeps its state under the test's directory"
    state = json.loads(states[0].read_text())
    marker = next(r for r in state["resources"] if r["name"] == "release")
    marker["instances"][0]["attributes"]["triggers"]["release_version"] = "0.9.9-hotfix"
    state["serial"] += 1
    states[0].write_text(json.dumps(state))

    drift.check_terraform(staging.pk)

    found = EnvironmentDrift.objects.get(environment=staging)
    assert found.state == DriftState.DRIFTED
    assert [(i["kind"], i["name"]) for i in found.items] == [("terraform", "null_resource.release")]
    assert "plan would" in found.items[0]["actual"]


def test_a_source_that_cannot_be_read_is_unknown_never_in_sync(
    release,
    staging,
    users,
    queues,
    monkeypatch,  # noqa: F811
):
    assert ship(release, staging, users, queues).status == Status.SUCCEEDED
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there

    drift.check_runtime(staging.pk)

    found = EnvironmentDrift.objects.get(environment=staging)
    assert found.state == DriftState.UNKNOWN
    assert "ECS rolling update" in found.reasons["service"]


def test_nothing_deployed_yet_is_unknown_with_the_reason(staging):  # noqa: F811
    drift.check_runtime(staging.pk)
    found = EnvironmentDrift.objects.get(environment=staging)
    assert found.state == DriftState.UNKNOWN
    assert found.reasons == {"service": "Gantry has deployed nothing here yet."}


def test_a_kubernetes_deployment_patched_by_hand_is_drift(
    catalog,
    release,
    users,
    kube_api,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("KUBE_API_URL", kube_api.url)
    dev = env(catalog, "dev")
    namespace = f"fraud-detector-drift-{dev.pk}"
    for service in ("fraud-api", "fraud-ml"):
        kube_api.cluster.add_deployment(namespace, service, {service: image(service)}, replicas=1)
    Step.objects.create(environment=dev, order=1, name="Rollout", kind="k8s_rolling", config={
        "namespace": namespace, "deployments": ["fraud-api", "fraud-ml"],
    })  # fmt: skip
    from deployments.models import Deployment

    Deployment.objects.create(release=release, environment=dev, requested_by=users["alice"],
                              reason="seeded", status=Status.SUCCEEDED)  # fmt: skip
    drift.check_runtime(dev.pk)
    assert EnvironmentDrift.objects.get(environment=dev).state == DriftState.IN_SYNC

    apps = client.AppsV1Api(client.ApiClient(client.Configuration(host=kube_api.url)))
    apps.patch_namespaced_deployment("fraud-ml", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "fraud-ml", "image": OUTSIDER}]}}}})  # fmt: skip
    drift.check_runtime(dev.pk)

    found = EnvironmentDrift.objects.get(environment=dev)
    assert found.state == DriftState.DRIFTED
    assert [(i["name"], i["actual"]) for i in found.items] == [
        (f"{namespace}/fraud-ml/fraud-ml", OUTSIDER)
    ]


def test_the_api_reads_drift_and_queues_a_check_for_deployers(
    release,
    staging,
    users,
    queues,
    api,  # noqa: F811
):
    assert ship(release, staging, users, queues).status == Status.SUCCEEDED
    url = reverse("api-environment-drift", args=[staging.pk])
    before = api("dave").get(url).json()
    assert before["state"] == "unknown" and before["checked_at"] is None

    refused = api("dave").post(reverse("api-environment-drift-check", args=[staging.pk]))
    accepted = api("alice").post(reverse("api-environment-drift-check", args=[staging.pk]))
    work(queues)
    after = api("dave").get(url).json()

    assert refused.status_code == 403
    assert accepted.status_code == 202
    assert after["state"] == "in_sync" and after["items"] == [] and after["checked_at"]
    assert api("dave").get(reverse("api-environment-drift", args=[999999])).status_code == 404


def test_a_check_that_finds_the_same_leaves_the_dashboard_card_alone(staging, monkeypatch):  # noqa: F811
    told = []
    monkeypatch.setattr(drift_model, "environment_changed", lambda *a: told.append(a))
    drift.check_runtime(staging.pk)
    drift.check_runtime(staging.pk)  # the next sweep: same state, same reason

    assert told == [(staging.pk, "drift")]
    assert EnvironmentDrift.objects.get(environment=staging).checked_at is not None


def test_the_check_button_queues_for_deployers_and_says_when_the_queue_is_down(
    client, release, staging, users, queues, settings
):
    url = reverse("environment-drift-check", args=[staging.application.slug, staging.slug])
    page = reverse("environment-detail", args=[staging.application.slug, staging.slug])
    low = queues[2]

    client.force_login(users["dave"])  # a viewer
    assert client.post(url).status_code == 403
    assert low.job_ids == []

    client.force_login(users["alice"])
    for _ in range(2):  # a second click queues a second check, nothing else
        response = client.post(url, follow=True)
        assert response.redirect_chain[-1][0] == page
        assert "Drift check queued" in response.content.decode()
    assert [low.fetch_job(i).func_name for i in low.job_ids] == [drift.CHECK_JOB] * 2

    with socket.socket() as probe:  # the queue's Redis at a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    reachable = settings.RQ_QUEUES
    settings.RQ_QUEUES = {name: {**q, "URL": closed} for name, q in reachable.items()}
    response = client.post(url, follow=True)
    settings.RQ_QUEUES = reachable  # before the queues fixture empties them
    assert response.status_code == 200
    assert "The job queue (Redis) is not answering" in response.content.decode()
    assert len(low.job_ids) == 2  # nothing more was queued
