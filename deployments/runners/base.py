"""What every step runner gets and gives: the step context, the runner
interface and the errors the deploy engine understands.

Runners know no models: the engine (deployments/engine.py) fills a
StepContext with plain values from the deployment, and a runner returns its
outputs as plain data. Cloud access comes from portal/cloud/, a step's config
schema and `${…}` references from environments/steps.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from environments.steps import ConfigError, References, validate_step_config
from portal.cloud.aws import AwsAccess
from portal.cloud.errors import Cancelled, CloudError
from portal.cloud.kube import KubeAccess


class StepFailed(CloudError):
    """The step could not do its job; `message` tells a person what to do next.

    `outputs` carries what the runner had already changed when it failed.
    The engine treats any CloudError a runner lets through (an AWS call, a
    tool) as the step failing with that message.
    """


class StepCancelled(StepFailed, Cancelled):
    """Someone cancelled the deployment while this step ran; the step stopped cleanly."""


def _discard_log(text: str, stream: str = "stdout") -> None:
    """Default log sink for contexts built without one."""


@dataclass
class StepContext(References):
    """Everything a runner may use while it runs one step of one deployment.

    `log(text, stream)` receives every output line (the engine masks secrets
    before storing it; runners never log secret values themselves).
    `plan` is what `plan()` returned in the planning phase; `plan_sha256` is
    what the approvals were given for; `previous_outputs` is what this step
    returned when the target release last succeeded here.
    """

    config: dict = field(default_factory=dict)
    workdir: Path = field(default_factory=Path)
    log: Callable[..., None] = _discard_log
    cancelled: threading.Event = field(default_factory=threading.Event)
    health_urls: list[str] = field(default_factory=list)
    aws: AwsAccess = field(default_factory=AwsAccess)
    kube_api_client: Callable[[], Any] = field(default_factory=KubeAccess)
    plan: dict | None = None
    plan_sha256: str = ""
    previous_outputs: dict | None = None
    # What `terraform show -json` printed for the plan just made, for the
    # policies: in memory only, as it may hold the environment's secrets.
    plan_document: dict | None = None
    # Who or what the context serves, for log messages ("deployment #12").
    label: str = ""

    # -- helpers shared by the runners ------------------------------------------

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise StepCancelled("The deployment was cancelled.")

    def sleep(self, seconds: float) -> None:
        """Wait, but wake up at once (and stop) when the deployment is cancelled."""
        if self.cancelled.wait(max(seconds, 0)):
            raise StepCancelled("The deployment was cancelled.")


class Runner:
    """One step kind. Subclasses implement `run`, `rollback` and, for kinds
    with a planning phase, `plan`."""

    kind: ClassVar[str] = ""
    has_plan: ClassVar[bool] = False

    def validate_config(self, config: dict) -> dict:
        """The normalised config, or ConfigError naming the key (environments/steps.py)."""
        return validate_step_config(self.kind, config)

    def plan(self, ctx: StepContext) -> dict:
        raise NotImplementedError(f"{self.kind} steps have no planning phase")

    def run(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    def rollback(self, ctx: StepContext) -> dict:
        """Bring the context's release (the rollback's target) back. Kinds
        without one of their own run as in a deploy, or are skipped
        (deployments/jobs.py OWN_ROLLBACK, SKIPPED_ON_ROLLBACK)."""
        raise NotImplementedError(f"{self.kind} steps have no rollback of their own")

    def config(self, ctx: StepContext) -> dict:
        """The step's validated config; a bad config fails the step, naming the key."""
        try:
            return self.validate_config(ctx.config)
        except ConfigError as exc:
            raise StepFailed(f"Invalid {self.kind} step config: {exc}") from None
