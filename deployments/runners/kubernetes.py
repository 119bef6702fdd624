"""`k8s_rolling` steps: patch Deployments' container images and follow the
rollout like `kubectl rollout status`; roll back like `kubectl rollout undo`
by restoring the previous ReplicaSet's pod template (seed 003).

Config::

    {"namespace": "fraud-detector-${environment}",
     "deployments": ["fraud-api", "fraud-ml"],
     "container_artifacts": {"api": "fraud-api"},   # container name → release service
     "timeout_seconds": 600, "poll_seconds": 2}

Without `container_artifacts`, a container gets the image of the release
service with the same name.
"""

from __future__ import annotations

import urllib3
from kubernetes.client import ApiException, AppsV1Api

from deployments.runners.base import Runner, StepContext, StepFailed
from portal.cloud.kube import KUBE_CONNECT_TIMEOUT, KUBE_READ_TIMEOUT, KUBE_RETRIES
from portal.cloud.process import Deadline

REVISION = "deployment.kubernetes.io/revision"


def rollout_status(deployment) -> tuple[str, bool]:
    """kubectl's rollout status logic: a message, and whether the rollout is done.
    A Deployment past its progress deadline fails the step."""
    name = deployment.metadata.name
    status = deployment.status
    if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return "waiting for the Deployment spec update to be observed", False
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise StepFailed(
                f"Deployment {name} exceeded its progress deadline: {condition.message} "
                "Check the new pods (image pull, crash loop, readiness probe)."
            )
    desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    replicas = status.replicas or 0
    available = status.available_replicas or 0
    if updated < desired:
        return f"{updated} of {desired} new replicas have been updated", False
    if replicas > updated:
        return f"{replicas - updated} old replicas are pending termination", False
    if available < updated:
        return f"{available} of {updated} updated replicas are available", False
    return "successfully rolled out", True


class K8sRollingRunner(Runner):
    kind = "k8s_rolling"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        namespace = ctx.expand(config["namespace"])
        apps = AppsV1Api(ctx.kube_api_client())
        records = []
        outputs = {"namespace": namespace, "deployments": records}
        for name in config["deployments"]:
            deployment = self._call(apps.read_namespaced_deployment, name, namespace)
            containers = deployment.spec.template.spec.containers
            updates = []
            for container in containers:
                slug = config["container_artifacts"].get(container.name, container.name)
                if slug in ctx.artifacts:
                    updates.append({"name": container.name, "image": ctx.artifacts[slug]})
            if not updates:
                raise StepFailed(
                    f"No container of Deployment {name} matches a service of the release "
                    f"({', '.join(sorted(ctx.artifacts)) or 'none'}); set container_artifacts.",
                    outputs=outputs,
                )
            records.append(
                {
                    "name": name,
                    "previous_revision": (deployment.metadata.annotations or {}).get(REVISION),
                    "previous_images": {c.name: c.image for c in containers},
                    "images": {u["name"]: u["image"] for u in updates},
                }
            )
            patch = {"spec": {"template": {"spec": {"containers": updates}}}}
            self._call(apps.patch_namespaced_deployment, name, namespace, patch)
            for update in updates:
                ctx.log(f"{namespace}/{name}: {update['name']} → {update['image']}", "system")
        deadline = Deadline(config["timeout_seconds"])
        for record in records:
            final = self._follow(ctx, apps, namespace, record["name"], deadline, config, outputs)
            record["revision"] = (final.metadata.annotations or {}).get(REVISION)
        return outputs

    def rollback(self, ctx: StepContext) -> dict:
        """Bring the target release (ctx's) back: set its images on each
        Deployment and follow the rollout, as a deploy of it would. (Going back
        through ReplicaSet history only works one step back, from a rollout
        Gantry recorded; the release's images work after any sequence.)"""
        return {**self.run(ctx), "rollback": True}

    def _follow(self, ctx, apps, namespace, name, deadline, config, outputs):
        """Poll until the rollout is complete, logging each new state."""
        last = None
        while True:
            ctx.check_cancelled()
            deployment = self._call(apps.read_namespaced_deployment, name, namespace)
            try:
                message, done = rollout_status(deployment)
            except StepFailed as failure:
                failure.outputs = outputs
                raise
            if message != last:
                ctx.log(f"{namespace}/{name}: {message}")
                last = message
            if done:
                return deployment
            if deadline.passed:
                raise StepFailed(
                    f"Deployment {name} did not finish rolling out within "
                    f"{deadline.seconds:g} s ({message}).",
                    outputs=outputs,
                )
            ctx.sleep(config["poll_seconds"])

    @staticmethod
    def _call(method, *args, **kwargs):
        """Call the Kubernetes API; turn its errors into messages a person can act on.
        Refusals, timeouts and 5xx answers were already retried (portal/cloud/kube.py)."""
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            if error.status == 404:
                raise StepFailed(
                    f"Not found in the cluster: {args[0]} in namespace {args[1]}."
                    if len(args) > 1
                    else f"Not found in the cluster: namespace {args[0]}."
                ) from None
            if error.status in (401, 403):
                raise StepFailed(
                    f"The cluster refused access ({error.status} {error.reason}); "
                    "check the environment's kube context and its RBAC."
                ) from None
            if error.status >= 500:
                raise StepFailed(
                    f"The Kubernetes API at {_api_host(method)} answered {error.status} "
                    f"{error.reason} (after {KUBE_RETRIES} retries); the cluster's API server "
                    "is failing. Check it, then retry the deployment."
                ) from None
            raise StepFailed(f"Kubernetes API error {error.status}: {error.reason}") from None
        except (OSError, urllib3.exceptions.HTTPError) as error:
            reason = getattr(error, "reason", None) or error  # MaxRetryError wraps the cause
            raise StepFailed(
                f"Cannot reach the Kubernetes API at {_api_host(method)} ({KUBE_RETRIES + 1} "
                f"tries, {KUBE_CONNECT_TIMEOUT} s to connect and {KUBE_READ_TIMEOUT} s to "
                f"answer each): {_plain(reason)}"
            ) from None


def _api_host(method) -> str:
    """The API server a bound client method talks to."""
    configuration = getattr(getattr(getattr(method, "__self__", None), "api_client", None),
                            "configuration", None)  # fmt: skip
    return getattr(configuration, "host", None) or "?"


def _plain(reason) -> str:
    """urllib3's reasons read "<…HTTPConnection object at 0x…>: Read timed out." or
    "…: Failed to establish a new connection: [Errno 111] Connection refused"."""
    text = str(reason)
    return text.split(">: ", 1)[-1] if ">: " in text else text
