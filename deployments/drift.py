"""Drift detection: compare what runs in an environment with what Gantry
deployed there (the release of its latest succeeded deployment).

- Runtime (`service`): the images of the ECS services (rolling: each service;
  blue/green: the live colour) and Kubernetes Deployments its steps name,
  against the release's digests. Someone's `aws ecs update-service` or
  `kubectl set image` shows up here.
- Terraform (`terraform`): a plan of each Terraform step with the current
  release's variables, without the state lock; any change is drift.

`sweep_drift()` (the scheduler, every DRIFT_CHECK_SECONDS) checks every
environment's runtime at once and queues one Terraform check per environment
that has Terraform steps; `check(environment_id)` does both on demand. A
source that cannot be read makes the state `unknown` with the reason, never
`in_sync`. Results: deployments/models/drift.py.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from kubernetes.client import AppsV1Api

from deployments.choices import DriftKind, Status
from deployments.engine import step_context
from deployments.models import Deployment, StepRun
from deployments.models.drift import record
from deployments.models.queueing import check_queue, enqueue_on_commit
from deployments.runners import StepFailed, get_runner
from deployments.runners.kubernetes import K8sRollingRunner
from deployments.runners.terraform import TerraformRunner
from environments.choices import StepKind
from environments.models import Environment
from portal.cloud.aws import aws_call
from portal.cloud.errors import CloudError
from portal.cloud.masking import Masker
from portal.core.choices import Role
from portal.core.roles import Forbidden, has_role

log = logging.getLogger(__name__)

CHECK_JOB = "deployments.drift.check"
TERRAFORM_JOB = "deployments.drift.check_terraform"
RUNTIME_KINDS = (StepKind.ECS_ROLLING, StepKind.ECS_BLUE_GREEN, StepKind.K8S_ROLLING)
# describe_services takes at most this many services per call.
ECS_BATCH = 10


def current_deployment(environment: Environment) -> Deployment | None:
    """What Gantry last put there: the latest succeeded deployment or rollback."""
    return (
        Deployment.objects.filter(environment=environment, status=Status.SUCCEEDED)
        .select_related("release", "environment")
        .latest_first()
        .first()
    )


def request_check(environment: Environment, user) -> None:
    """A deployer asks for both checks now (the page's button, the API):
    Forbidden for anyone else, Unavailable while the job queue is down."""
    if not has_role(user, environment, Role.DEPLOYER):
        raise Forbidden(f"You need the deployer role in {environment} to check drift.")
    check_queue("low")
    enqueue_on_commit("low", CHECK_JOB, environment.pk)


def sweep_drift() -> dict[str, int]:
    """Every environment's runtime now; Terraform checks queued one per environment."""
    counts = {"checked": 0, "terraform_queued": 0}
    clients: dict = {}  # one boto3 client per region and role for the whole sweep
    with_terraform = set(
        Environment.objects.filter(steps__kind=StepKind.TERRAFORM).values_list("pk", flat=True)
    )
    for environment in Environment.objects.all():
        check_runtime(environment.pk, clients)
        counts["checked"] += 1
        if environment.pk in with_terraform:
            enqueue_on_commit("low", TERRAFORM_JOB, environment.pk)
            counts["terraform_queued"] += 1
    return counts


def check(environment_id: int) -> None:
    """Both sources, now (the on-demand check's job)."""
    check_runtime(environment_id)
    check_terraform(environment_id)


def check_runtime(environment_id: int, clients: dict | None = None):
    """`clients` keeps AWS clients between environments of one sweep: making
    a boto3 client costs more CPU than the calls it then makes."""
    clients = {} if clients is None else clients
    environment = Environment.objects.get(pk=environment_id)
    steps = list(environment.steps.filter(kind__in=RUNTIME_KINDS).order_by("order"))
    current = current_deployment(environment)
    if not steps:
        return record(environment_id, DriftKind.SERVICE, [])
    if current is None:
        return record(environment_id, DriftKind.SERVICE, [],
                      "Gantry has deployed nothing here yet.")  # fmt: skip
    items, reasons = [], []
    for step in steps:
        ctx = _context(current, step.config, Path(tempfile.gettempdir()))
        try:
            if step.kind == StepKind.K8S_ROLLING:
                items += _kubernetes(ctx, step)
            else:
                items += _ecs(ctx, step, current, clients)
        except CloudError as exc:
            reasons.append(f"{step.name}: {Masker(ctx.secret_values).mask(exc.message)}")
    return record(environment_id, DriftKind.SERVICE, items, "; ".join(reasons))


def check_terraform(environment_id: int):
    environment = Environment.objects.get(pk=environment_id)
    steps = list(environment.steps.filter(kind=StepKind.TERRAFORM).order_by("order"))
    current = current_deployment(environment)
    if not steps:
        return record(environment_id, DriftKind.TERRAFORM, [])
    if current is None:
        return record(environment_id, DriftKind.TERRAFORM, [],
                      "Gantry has deployed nothing here yet.")  # fmt: skip
    items, reasons = [], []
    for step in steps:
        with tempfile.TemporaryDirectory(prefix="gantry-drift-", dir=_scratch()) as workdir:
            ctx = _context(current, step.config, Path(workdir))
            try:
                plan = TerraformRunner().plan(ctx, lock=False)
            except CloudError as exc:
                reasons.append(f"{step.name}: {Masker(ctx.secret_values).mask(exc.message)}")
                continue
        for change in plan["resource_changes"]:
            items.append({
                "kind": DriftKind.TERRAFORM, "name": change["address"],
                "expected": f"as applied by deployment #{current.pk} ({current.release.version})",
                "actual": f"plan would {'/'.join(change['actions'])} ({step.name})",
            })  # fmt: skip
    return record(environment_id, DriftKind.TERRAFORM, items, "; ".join(reasons))


def _scratch() -> str:
    path = Path(settings.DEPLOY_WORKDIR) / "drift"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _context(current: Deployment, config: dict, workdir: Path):
    # Drift checks log nothing to a deployment: their findings are the result.
    return step_context(current, config, workdir=workdir, log=_quiet, cancelled=threading.Event())


def _quiet(*args, **kwargs) -> None:
    return None


def _expected(container: str, mapping: dict, artifacts: dict, single_service: str = "") -> str:
    slug = mapping.get(container, container)
    if slug in artifacts:
        return artifacts[slug]
    return artifacts.get(single_service, "")


def _ecs(ctx, step, current: Deployment, clients: dict) -> list[dict]:
    config = get_runner(step.kind).config(ctx)
    cluster = ctx.expand(config["cluster"])
    mapping = config["container_artifacts"]
    if step.kind == StepKind.ECS_BLUE_GREEN:
        services = [_live_colour_service(step, current, config)]
    else:
        services = list(config["services"])
    key = ("ecs", ctx.aws.region, ctx.aws.role_arn)
    if key not in clients:
        clients[key] = ctx.aws.client("ecs")
    ecs = clients[key]
    found = {}
    for start in range(0, len(services), ECS_BATCH):
        batch = services[start : start + ECS_BATCH]
        answer = aws_call("Describing ECS services", ecs.describe_services,
                          cluster=cluster, services=batch)  # fmt: skip
        found.update(
            {s["serviceName"]: s for s in answer.get("services", []) if s["status"] != "INACTIVE"}
        )
    items, definitions = [], {}
    for name in services:
        if name not in found:
            raise StepFailed(f"ECS service {name} not found in cluster {cluster}.")
        arn = found[name]["taskDefinition"]
        if arn not in definitions:
            definitions[arn] = aws_call("Reading the task definition", ecs.describe_task_definition,
                                        taskDefinition=arn)["taskDefinition"]  # fmt: skip
        containers = definitions[arn]["containerDefinitions"]
        single = name if len(containers) == 1 else ""
        for container in containers:
            expected = _expected(container["name"], mapping, ctx.artifacts, single)
            if expected and container["image"] != expected:
                where = f"{cluster}/{name}/{container['name']}"
                items.append(_service_item(where, expected, container["image"]))
    return items


def _live_colour_service(step, current: Deployment, config: dict) -> str:
    """The colour the last succeeded blue/green run switched traffic to."""
    run = (
        StepRun.objects.filter(deployment=current, order=step.order, phase="deploy")
        .order_by("-pk")
        .first()
    )
    colour = (run.outputs or {}).get("colour") if run else None
    if colour not in ("blue", "green"):
        raise StepFailed("No record of which colour is live; deploy once through Gantry.")
    return config[colour]["service"]


def _kubernetes(ctx, step) -> list[dict]:
    config = get_runner(step.kind).config(ctx)
    namespace = ctx.expand(config["namespace"])
    mapping = config["container_artifacts"]
    apps = AppsV1Api(ctx.kube_api_client())
    items = []
    for name in config["deployments"]:
        deployment = K8sRollingRunner._call(apps.read_namespaced_deployment, name, namespace)
        for container in deployment.spec.template.spec.containers:
            expected = _expected(container.name, mapping, ctx.artifacts)
            if expected and container.image != expected:
                where = f"{namespace}/{name}/{container.name}"
                items.append(_service_item(where, expected, container.image))
    return items


def _service_item(name: str, expected: str, actual: str) -> dict:
    return {"kind": DriftKind.SERVICE, "name": name, "expected": expected, "actual": actual}
