"""The deployments app's models, one module per concept: releases, deployments
and their approvals, what a run leaves behind, notifications."""

from deployments.choices import DriftState
from deployments.models.approval import Approval, approval_digest
from deployments.models.current import current_estimates, with_current_deployment
from deployments.models.deployment import (
    Deployment,
    DeploymentQuerySet,
    initial_status,
    lock_environment,
    runs_now_in,
    wake_next_queued,
)
from deployments.models.drift import EnvironmentDrift
from deployments.models.notification import Notification, announce, announce_environment
from deployments.models.policy import PolicyCheck
from deployments.models.release import (
    IMAGE_REF_RE,
    Artifact,
    Release,
    artifacts_with_services,
    load_artifacts,
)
from deployments.models.run import CostEstimate, LogLine, StepRun

__all__ = [
    "IMAGE_REF_RE", "Approval", "Artifact", "CostEstimate", "Deployment", "DeploymentQuerySet",
    "DriftState", "EnvironmentDrift", "artifacts_with_services", "load_artifacts",
    "LogLine", "Notification", "PolicyCheck", "Release", "StepRun", "announce",
    "announce_environment", "approval_digest", "current_estimates", "initial_status",
    "lock_environment", "runs_now_in", "wake_next_queued", "with_current_deployment",
]  # fmt: skip
