"""Step runners of the deploy engine, one module per step kind.

`RUNNERS` maps each `environments.choices.StepKind` value to its runner; the
engine calls `get_runner(kind).plan/run/rollback(ctx)`. What a step's config
may hold is the catalog's (environments/steps.py).
"""

from __future__ import annotations

from deployments.runners.bake import BakeRunner
from deployments.runners.base import Runner, StepCancelled, StepContext, StepFailed
from deployments.runners.command import CommandRunner
from deployments.runners.ecs import EcsBlueGreenRunner, EcsRollingRunner
from deployments.runners.http_check import HttpCheckRunner
from deployments.runners.kubernetes import K8sRollingRunner
from deployments.runners.rds import RdsSnapshotRunner
from deployments.runners.terraform import TerraformRunner
from environments.steps import ConfigError

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


__all__ = ["RUNNERS", "Runner", "StepCancelled", "StepContext", "StepFailed", "get_runner"]
