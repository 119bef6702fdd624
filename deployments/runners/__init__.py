"""Step runners of the deploy engine, one module per step kind.

`RUNNERS` maps each `environments.choices.StepKind` value to its runner; the
engine calls `get_runner(kind).plan/run/rollback(ctx)` and the admin calls
`validate_step_config(kind, config)`.
"""

from __future__ import annotations

from deployments.runners.bake import BakeRunner
from deployments.runners.base import (
    AwsAccess,
    ConfigError,
    KubeAccess,
    Runner,
    StepCancelled,
    StepContext,
    StepFailed,
)
from deployments.runners.command import CommandRunner
from deployments.runners.ecs import EcsBlueGreenRunner, EcsRollingRunner
from deployments.runners.http_check import HttpCheckRunner
from deployments.runners.kubernetes import K8sRollingRunner
from deployments.runners.rds import RdsSnapshotRunner
from deployments.runners.terraform import TerraformRunner

RUNNERS: dict[str, Runner] = {
    runner.kind: runner
    for runner in (
        TerraformRunner(),
        EcsRollingRunner(),
        EcsBlueGreenRunner(),
        K8sRollingRunner(),
        RdsSnapshotRunner(),
        CommandRunner(),
        HttpCheckRunner(),
        BakeRunner(),
    )
}


def get_runner(kind: str) -> Runner:
    try:
        return RUNNERS[kind]
    except KeyError:
        raise ConfigError("kind", f"unknown step kind {kind!r}") from None


def validate_step_config(kind: str, config: dict) -> dict:
    """The normalized config, or ConfigError (a ValueError) naming the bad key."""
    return get_runner(kind).validate_config(config)


__all__ = [
    "RUNNERS", "AwsAccess", "ConfigError", "KubeAccess", "Runner", "StepCancelled",
    "StepContext", "StepFailed", "get_runner", "validate_step_config",
]  # fmt: skip
