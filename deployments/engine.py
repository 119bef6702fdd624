"""What the engine's jobs share: where a step works on disk, and the
StepContext a runner gets, filled with plain values from the deployment's
rows (runners never see a model)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from deployments.models import Deployment
from deployments.runners import StepContext
from portal.cloud.aws import DEFAULT_REGION, AwsAccess
from portal.cloud.kube import KubeAccess


def step_workdir(deployment_id: int, order: int) -> Path:
    """Shared by the plan and the run job: the saved plan lives here."""
    return Path(settings.DEPLOY_WORKDIR) / str(deployment_id) / f"step-{order}"


def step_context(
    deployment: Deployment,
    config: dict,
    *,
    workdir: Path,
    log: Callable[..., None],
    cancelled: threading.Event | None = None,
    plan: dict | None = None,
    previous_outputs: dict | None = None,
) -> StepContext:
    """The context of one step of `deployment`: the release it ships, the
    environment's variables, secrets and cloud access."""
    environment = deployment.environment
    return StepContext(
        config=config,
        workdir=workdir,
        log=log,
        cancelled=cancelled or threading.Event(),
        environment_name=environment.slug,
        release_version=deployment.release.version,
        artifacts=deployment.artifact_map(),
        variables=dict(environment.variables or {}),
        secret_values=dict(environment.secret_variables or {}),
        health_urls=list(environment.health_urls or []),
        aws=AwsAccess(
            region=environment.region or DEFAULT_REGION, role_arn=environment.aws_role_arn
        ),
        kube_api_client=KubeAccess(context=environment.kube_context),
        plan=plan,
        plan_sha256=deployment.plan_sha256,
        previous_outputs=previous_outputs,
        label=f"deployment #{deployment.pk}",
    )
