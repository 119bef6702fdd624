"""`terraform` steps: plan in the planning phase, apply exactly that plan later.

Terraform itself is driven through portal/cloud/terraform.py. Each process
gets `TF_WORKSPACE` (one workspace per environment) and its own `TF_DATA_DIR`
under the step's workdir, so two plans for different environments can share
a module directory without racing on `.terraform/`.

Config::

    {"path": "infra/terraform/fraud-detector",        # or "git": {"url": …, "ref": …}
     "subdir": "",                                      # inside the git checkout
     "workspace": "${environment}",
     "variables": {"environment": "${environment}",
                   "images": {"fraud-api": "${artifact.fraud-api}"},
                   "db_password": "${secret.db_password}"},
     "backend_config": {"workspace_dir": "/var/lib/gantry/tfstate"},
     "timeout_seconds": 1800}
"""

from __future__ import annotations

import json
import logging
import os
from decimal import Decimal
from pathlib import Path

from python_terraform import IsFlagged

from deployments.runners.base import Runner, StepContext, StepFailed
from environments import pricing
from environments.steps import REFERENCE_RE
from portal.cloud.masking import Masker
from portal.cloud.process import stream_process
from portal.cloud.terraform import (
    TerraformSession,
    file_sha256,
    planned_outputs,
    summarize_change,
)

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLAN_FILE = "terraform.tfplan"
# Seconds `terraform force-unlock` may take (one call to the state backend).
FORCE_UNLOCK_TIMEOUT = 60


class _StepTerraform:
    """A step's Terraform: its module (a directory, or a git checkout in the
    step's workdir), its variables, and a session in its workspace whose data
    dir lives in the step's workdir (shared by the plan and the apply)."""

    def __init__(self, ctx: StepContext, config: dict) -> None:
        self.ctx = ctx
        self.config = config
        self.session = TerraformSession(
            self._source_dir(),
            ctx.expand(config["workspace"]),
            ctx.workdir / "tf-data",
            backend_config=ctx.expand(config["backend_config"]),
            timeout=config["timeout_seconds"],
            log=ctx.log,
            cancelled=ctx.cancelled,
        )

    def _source_dir(self) -> Path:
        if self.config["path"]:
            path = Path(self.config["path"])
            path = path if path.is_absolute() else PROJECT_ROOT / path
            if not (path / "main.tf").exists() and not any(path.glob("*.tf")):
                raise StepFailed(f"No Terraform files in {path}.")
            return path
        checkout = self.ctx.workdir / "source"
        if not checkout.exists():
            self._clone(checkout)
        return checkout / self.config["subdir"]

    def _clone(self, checkout: Path) -> None:
        git = self.config["git"]
        # The ref may name the release (a tag "v${release.version}"); the URL may
        # carry a ${secret.…} token, so the log shows it as configured.
        url, ref = self.ctx.expand(git["url"]), self.ctx.expand(git["ref"])
        self.ctx.log(f"Fetching {git['url']} at {ref}", "system")
        checkout.mkdir(parents=True)
        for name, argv in (
            ("init", ["git", "init", "-q", str(checkout)]),
            ("fetch", ["git", "-C", str(checkout), "fetch", "-q", "--depth", "1", url, ref]),
            ("checkout", ["git", "-C", str(checkout), "checkout", "-q", "FETCH_HEAD"]),
        ):
            returncode, stderr = stream_process(
                argv, log=self.ctx.log, cancelled=self.ctx.cancelled, timeout=300
            )
            if returncode != 0:
                raise StepFailed(f"git {name} failed: {stderr[-1] if stderr else returncode}")

    def tfvars_template(self) -> dict:
        """Variables resolved except `${secret.…}`, which stay references: this is
        stored with the step's outputs, and secrets must not be."""
        return _expand_keeping_secrets(self.ctx, self.config["variables"])

    def write_var_file(self, template: dict) -> Path:
        path = self.ctx.workdir / "gantry.tfvars.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.ctx.expand(template), handle)
        return path


class TerraformRunner(Runner):
    kind = "terraform"
    has_plan = True
    # -- the phases --------------------------------------------------------------

    def plan(
        self, ctx: StepContext, tfvars_template: dict | None = None, lock: bool = True
    ) -> dict:
        """init + plan -out + show -json: the diff and the SHA-256 approvals bind to.
        `lock=False` for a plan that is only looked at (drift): it must not hold
        the state lock a deployment's apply needs."""
        config = self.config(ctx)
        step = _StepTerraform(ctx, config)
        session = step.session
        template = tfvars_template if tfvars_template is not None else step.tfvars_template()
        session.init()
        plan_path = ctx.workdir / PLAN_FILE
        var_file = step.write_var_file(template)
        try:
            locking = (
                {"lock_timeout": f"{config['plan_lock_wait_seconds']:g}s"} if lock
                else {"lock": False}
            )  # fmt: skip
            returncode = session.run(
                "plan", input=False, no_color=IsFlagged, detailed_exitcode=IsFlagged,
                var_file=str(var_file), out=str(plan_path), **locking,
            )  # fmt: skip
        finally:
            var_file.unlink(missing_ok=True)
        if returncode not in (0, 2):
            raise session.failure("plan")
        shown = json.loads(
            session.capture("show", str(plan_path), json=IsFlagged, no_color=IsFlagged)
        )
        # Values the module doesn't mark sensitive still may be the environment's secrets.
        masker = Masker(ctx.secret_values)
        changes = [
            _mask_values(summarize_change(rc), masker)
            for rc in shown.get("resource_changes", [])
            if set(rc["change"]["actions"]) - {"no-op", "read"}
        ]
        counts = {"add": 0, "change": 0, "destroy": 0}
        for change in changes:
            actions = change["actions"]
            counts["add"] += "create" in actions
            counts["change"] += actions == ["update"]
            counts["destroy"] += "delete" in actions
        plan_sha256 = file_sha256(plan_path)
        ctx.plan_document = shown  # for the policies; never in the returned outputs
        ctx.log(
            f"Plan: {counts['add']} to add, {counts['change']} to change, "
            f"{counts['destroy']} to destroy; plan SHA-256 {plan_sha256}.",
            "system",
        )
        return {
            "plan_sha256": plan_sha256,
            "plan_path": str(plan_path),
            "resource_changes": changes,
            "summary": counts,
            "workspace": session.workspace,
            "tfvars": template,
            "cost": _mask_values(_plan_cost(ctx, shown), masker),
            # None: some output is known only after the apply, which then reads them all.
            "planned_outputs": _mask_values(planned_outputs(shown), masker),
        }

    def run(self, ctx: StepContext) -> dict:
        """Apply the saved plan, after checking it is byte for byte the approved one."""
        config = self.config(ctx)
        if not ctx.plan or not ctx.plan.get("plan_path"):
            raise StepFailed("No saved Terraform plan for this deployment; request a new plan.")
        plan_path = Path(ctx.plan["plan_path"])
        expected = ctx.plan.get("plan_sha256") or ctx.plan_sha256
        if not plan_path.exists():
            raise StepFailed(f"The saved plan {plan_path} is gone; request a new plan.")
        actual = file_sha256(plan_path)
        if actual != expected:
            raise StepFailed(
                f"The saved plan's SHA-256 is {actual}, but {expected or 'nothing'} was approved; "
                "request a new plan."
            )
        session = _StepTerraform(ctx, config).session
        # The saved plan lives in this step's workdir, next to the data dir the
        # plan job initialised; a second `init` is needed only if that is gone.
        if not session.initialised():
            session.init()
        self._apply(session, plan_path)
        previous = (ctx.previous_outputs or {}).get("tfvars")
        outputs = ctx.plan.get("planned_outputs")
        if outputs is None:
            outputs = _mask_values(session.outputs(), Masker(ctx.secret_values))
        return {
            "plan_sha256": actual,
            "workspace": session.workspace,
            "tfvars": ctx.plan.get("tfvars", {}),
            "previous_tfvars": previous,
            "outputs": outputs,
        }

    def _apply(self, session: TerraformSession, plan_path: Path) -> None:
        returncode = session.run(
            "apply", str(plan_path), input=False, no_color=IsFlagged, lock_timeout="0s",
            auto_approve=IsFlagged,
        )  # fmt: skip
        if returncode != 0:
            raise session.failure("apply")


def _plan_cost(ctx: StepContext, shown: dict) -> dict:
    """The plan's monthly cost in the environment's region. A plan the catalog
    cannot price is still a plan: the approvers see why there is no estimate."""
    try:
        cost = pricing.estimate_plan(shown, ctx.aws.region).as_json()
    except (pricing.UnknownRegion, pricing.PlanError) as exc:
        ctx.log(f"No cost estimate: {exc}", "system")
        return {"region": ctx.aws.region, "error": str(exc)}
    except Exception:  # a pricing bug must not block a deployment; the log has the details
        log.exception("pricing the plan of %s failed", ctx.label or ctx.environment_name)
        ctx.log("No cost estimate: pricing the plan failed (see the worker log).", "system")
        return {"region": ctx.aws.region, "error": "pricing the plan failed"}
    ctx.log(
        f"Estimated cost: ${cost['monthly_total_usd']}/month in {cost['region']} "
        f"({pricing.signed_usd(Decimal(cost['delta_usd']))}/month against what runs now; "
        f"{len(cost['not_priced'])} resource(s) not priced).",
        "system",
    )
    return cost


class StateUnlock:
    """An admin's force-unlock of a dead run's state lock, in two parts:
    `init` here (it can take minutes; the caller holds nothing yet), then
    `release`, which the caller runs under its lock after its last checks."""

    def __init__(self, ctx: StepContext) -> None:
        self.session = _StepTerraform(ctx, TerraformRunner().config(ctx)).session
        self.session.init()

    def release(self, lock_id: str) -> None:
        # The caller holds the environment's row lock meanwhile (starts and
        # requests wait for it): a hung backend must not keep it for the
        # step's whole timeout.
        limit = min(self.session.timeout, FORCE_UNLOCK_TIMEOUT)
        command = ("force-unlock", lock_id)
        if self.session.run(*command, time_limit=limit, force=IsFlagged, no_color=IsFlagged) != 0:
            raise self.session.failure("force-unlock")


def _mask_values(value, masker: Masker):
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, list):
        return [_mask_values(item, masker) for item in value]
    if isinstance(value, dict):
        return {key: _mask_values(item, masker) for key, item in value.items()}
    return value


def _expand_keeping_secrets(ctx: StepContext, value):
    if isinstance(value, str):
        return REFERENCE_RE.sub(
            lambda m: m.group(0) if m.group(1) == "secret" else ctx.expand(m.group(0)), value
        )
    if isinstance(value, list):
        return [_expand_keeping_secrets(ctx, item) for item in value]
    if isinstance(value, dict):
        return {key: _expand_keeping_secrets(ctx, item) for key, item in value.items()}
    return value
