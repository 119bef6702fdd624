"""k8s_rolling steps through the official client against the FAKE Kubernetes API."""

from __future__ import annotations

import itertools

import pytest
from kubernetes import client

from deployments.runners.base import StepFailed
from deployments.runners.kubernetes import K8sRollingRunner

pytestmark = pytest.mark.slow

OLD = "registry.example.com/{}@sha256:" + "0" * 64
_namespaces = itertools.count(1)


@pytest.fixture
def namespace(kube_api) -> str:
    name = f"fraud-detector-k{next(_namespaces)}"
    for service in ("fraud-api", "fraud-ml"):
        kube_api.cluster.add_deployment(name, service, {service: OLD.format(service)}, replicas=3)
    return name


@pytest.fixture
def config(namespace) -> dict:
    return {
        "namespace": namespace,
        "deployments": ["fraud-api", "fraud-ml"],
        "timeout_seconds": 60,  # a rollout ends when done: a margin for a loaded machine
        "poll_seconds": 0.05,
    }


def apps(kube_api) -> client.AppsV1Api:
    return client.AppsV1Api(client.ApiClient(client.Configuration(host=kube_api.url)))


def test_it_patches_images_and_follows_the_rollout_to_completion(
    make_ctx, config, namespace, kube_api
):
    ctx = make_ctx(config)

    outputs = K8sRollingRunner().run(ctx)

    deployment = apps(kube_api).read_namespaced_deployment("fraud-api", namespace)
    assert deployment.spec.template.spec.containers[0].image == ctx.artifacts["fraud-api"]
    assert deployment.status.updated_replicas == deployment.status.available_replicas == 3
    records = {r["name"]: r for r in outputs["deployments"]}
    assert records["fraud-api"]["previous_revision"] == "1"
    assert records["fraud-api"]["revision"] == "2"
    assert records["fraud-ml"]["previous_images"] == {"fraud-ml": OLD.format("fraud-ml")}
    # It watched the rollout progress, like `kubectl rollout status`.
    assert "of 3 new replicas have been updated" in ctx.log.text
    assert f"{namespace}/fraud-api: successfully rolled out" in ctx.log.text
    patches = [r for r in kube_api.requests if r[0] == "PATCH" and namespace in r[1]]
    assert patches[0][2] == "application/strategic-merge-patch+json"


def test_a_rollback_sets_the_target_releases_images_after_any_sequence(
    make_ctx, config, namespace, kube_api
):
    """Rolled back twice (1.4.0 → 1.3.0 → 1.2.0): each time the target's own
    images go out and the rollout is followed, whatever ReplicaSets exist."""
    runner = K8sRollingRunner()
    runner.run(make_ctx(config))  # 1.4.0
    older = {s: OLD.format(s).replace("0" * 64, "3" * 64) for s in ("fraud-api", "fraud-ml")}
    oldest = {s: OLD.format(s).replace("0" * 64, "2" * 64) for s in ("fraud-api", "fraud-ml")}

    runner.rollback(make_ctx(config, release_version="1.3.0", artifacts=older))
    result = runner.rollback(make_ctx(config, release_version="1.2.0", artifacts=oldest))

    deployment = apps(kube_api).read_namespaced_deployment("fraud-api", namespace)
    assert deployment.spec.template.spec.containers[0].image == oldest["fraud-api"]
    assert deployment.status.updated_replicas == deployment.spec.replicas
    assert result["rollback"] and {r["name"] for r in result["deployments"]} == {
        "fraud-api",
        "fraud-ml",
    }


def test_it_fails_when_the_rollout_exceeds_its_progress_deadline(make_ctx, kube_api):
    namespace = f"fraud-detector-k{next(_namespaces)}"
    kube_api.cluster.add_deployment(
        namespace, "fraud-api", {"fraud-api": OLD.format("fraud-api")}, progress_deadline_seconds=0
    )
    kube_api.cluster.stall(namespace, "fraud-api")
    config = {"namespace": namespace, "deployments": ["fraud-api"], "poll_seconds": 0.05}

    with pytest.raises(StepFailed, match="exceeded its progress deadline") as failure:
        K8sRollingRunner().run(make_ctx(config))

    assert failure.value.outputs["deployments"][0]["previous_revision"] == "1"


def test_it_gives_up_at_its_own_timeout(make_ctx, kube_api):
    namespace = f"fraud-detector-k{next(_namespaces)}"
    kube_api.cluster.add_deployment(namespace, "fraud-api", {"fraud-api": OLD.format("fraud-api")})
    kube_api.cluster.stall(namespace, "fraud-api")
    config = {
        "namespace": namespace,
        "deployments": ["fraud-api"],
        "timeout_seconds": 1,
        "poll_seconds": 0.05,
    }

    with pytest.raises(StepFailed, match="did not finish rolling out within 1 s"):
        K8sRollingRunner().run(make_ctx(config))


def test_it_names_a_deployment_that_does_not_exist(make_ctx, config):
    config["deployments"] = ["fraud-nope"]

    with pytest.raises(StepFailed, match="fraud-nope in namespace"):
        K8sRollingRunner().run(make_ctx(config))


def test_the_fake_accepts_json_merge_patches(namespace, kube_api):
    api = apps(kube_api)
    api.patch_namespaced_deployment(
        "fraud-ml",
        namespace,
        {"metadata": {"labels": {"team": "risk"}}},
        _content_type="application/merge-patch+json",
    )

    deployment = api.read_namespaced_deployment("fraud-ml", namespace)

    assert deployment.metadata.labels == {"app": "fraud-ml", "team": "risk"}
    assert deployment.metadata.generation == 1  # metadata only: no new rollout
    assert client.VersionApi(api.api_client).get_code().git_version.endswith("-fake")


def test_it_names_the_bad_key_in_the_config():
    runner = K8sRollingRunner()
    with pytest.raises(ValueError, match="^deployments"):
        runner.validate_config({"deployments": []})
    with pytest.raises(ValueError, match="^poll_seconds"):
        runner.validate_config({"deployments": ["a"], "poll_seconds": 0})
