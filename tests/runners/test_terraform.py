"""terraform steps against the real Terraform binary and the null provider
from the sandbox's filesystem mirror (no network)."""

from __future__ import annotations

import fcntl
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployments.runners.terraform import TerraformRunner, _StepTerraform
from portal.cloud.errors import Cancelled, CloudError
from portal.cloud.masking import Masker
from portal.cloud.process import RUN_MARKER, processes_with
from portal.cloud.terraform import TerraformSession, file_sha256

pytestmark = pytest.mark.slow

MODULE = Path(__file__).resolve().parents[2] / "infra" / "terraform" / "fraud-detector"


@pytest.fixture
def tf_config(tmp_path, terraform_cli_config, monkeypatch) -> dict:
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(terraform_cli_config))
    return {
        "path": str(MODULE),
        "workspace": "${environment}",
        "variables": {
            "environment": "${environment}",
            "release_version": "${release.version}",
            "images": {"fraud-api": "${artifact.fraud-api}", "fraud-ml": "${artifact.fraud-ml}"},
        },
        # State outside the checkout, one directory per test.
        "backend_config": {"workspace_dir": str(tmp_path / "state")},
    }


def state_file(config: dict, workspace: str = "staging") -> Path:
    return Path(config["backend_config"]["workspace_dir"]) / workspace / "terraform.tfstate"


def test_it_plans_shows_the_diff_and_applies_exactly_that_plan(make_ctx, tf_config):
    runner = TerraformRunner()
    ctx = make_ctx(tf_config)
    plan = runner.plan(ctx)

    assert plan["plan_sha256"] == file_sha256(Path(plan["plan_path"]))
    addresses = {c["address"]: c for c in plan["resource_changes"]}
    api = addresses['null_resource.service["fraud-api"]']
    assert api["actions"] == ["create"]
    image = {a["name"]: a for a in api["attributes"]}["triggers"]["after"]["image"]
    assert image == ctx.artifacts["fraud-api"]
    assert plan["summary"] == {"add": 3, "change": 0, "destroy": 0}
    assert plan["tfvars"]["images"]["fraud-ml"] == ctx.artifacts["fraud-ml"]

    apply_ctx = make_ctx(tf_config, plan=plan)
    outputs = runner.run(apply_ctx)

    assert outputs["plan_sha256"] == plan["plan_sha256"]
    # Read back through `terraform output -json` (a remote backend works the same).
    assert outputs["outputs"]["images"]["fraud-api"] == ctx.artifacts["fraud-api"]
    state = json.loads(state_file(tf_config).read_text())
    assert {r["name"] for r in state["resources"]} == {"service", "release"}
    assert "Apply complete! Resources: 3 added" in apply_ctx.log.text


def test_it_gives_a_changed_variable_a_different_plan_hash(make_ctx, tf_config):
    runner = TerraformRunner()
    first = runner.plan(make_ctx(tf_config))
    runner.run(make_ctx(tf_config, plan=first))

    images = dict(
        make_ctx(tf_config).artifacts, **{"fraud-api": "repo/fraud-api@sha256:" + "f" * 64}
    )
    second = runner.plan(make_ctx(tf_config, artifacts=images))

    assert second["plan_sha256"] != first["plan_sha256"]
    assert second["summary"] == {"add": 1, "change": 0, "destroy": 1}  # triggers force replacement
    changed = [c["address"] for c in second["resource_changes"]]
    assert changed == ['null_resource.service["fraud-api"]']


def test_it_refuses_a_plan_file_that_is_not_the_approved_one(make_ctx, tf_config):
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    Path(plan["plan_path"]).write_bytes(b"tampered")

    with pytest.raises(CloudError, match="request a new plan") as failure:
        runner.run(make_ctx(tf_config, plan=plan))

    assert plan["plan_sha256"] in failure.value.message
    assert (
        not state_file(tf_config).exists()
        or "null_resource" not in state_file(tf_config).read_text()
    )


def test_it_refuses_a_plan_made_before_the_state_changed_saying_so(make_ctx, tf_config, tmp_path):
    """Two plans of one workspace; the other is applied first. Terraform
    refuses the stale one, and the step says what happened in plain words."""
    runner = TerraformRunner()
    first = make_ctx(tf_config, workdir=tmp_path / "first")
    second = make_ctx(tf_config, workdir=tmp_path / "second", release_version="1.5.0")
    plans = runner.plan(first), runner.plan(second)
    runner.run(make_ctx(tf_config, workdir=tmp_path / "first", plan=plans[0]))

    with pytest.raises(CloudError, match="changed since this plan was made, outside Gantry"):
        runner.run(make_ctx(tf_config, workdir=tmp_path / "second", plan=plans[1]))

    state = json.loads(state_file(tf_config).read_text())
    assert state["outputs"]["release_version"]["value"] == "1.4.0"  # nothing of 1.5.0 applied


def hold_state_lock(state: Path) -> None:
    """Write the lock record a running `terraform apply` of someone else
    leaves (the caller then takes the lock itself)."""
    lock_info = state.parent / ".terraform.tfstate.lock.info"
    lock_info.write_text(
        json.dumps(
            {
                "ID": "5f1c2a9e-aaaa-bbbb-cccc-0123456789ab",
                "Operation": "OperationTypeApply",
                "Info": "",
                "Who": "bob@ci-runner-7",
                "Version": "1.0.3",
                "Created": "2024-05-01T10:00:00Z",
                "Path": str(state),
            }
        )
    )


def test_it_fails_on_a_held_state_lock_naming_its_id_holder_and_time(make_ctx, tf_config):
    runner = TerraformRunner()
    runner.run(make_ctx(tf_config, plan=runner.plan(make_ctx(tf_config))))
    state = state_file(tf_config)
    hold_state_lock(state)
    tf_config["plan_lock_wait_seconds"] = 1
    with state.open("r+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CloudError) as failure:
            runner.plan(make_ctx(tf_config))

    message = failure.value.message
    assert "5f1c2a9e-aaaa-bbbb-cccc-0123456789ab" in message
    assert "bob@ci-runner-7" in message
    assert "2024-05-01 10:00:00" in message
    assert failure.value.details["lock"]["who"] == "bob@ci-runner-7"


def test_a_plan_waits_for_the_state_lock_of_an_apply_in_progress(make_ctx, tf_config):
    """Another deployment applies to the same state: the plan waits for its
    lock instead of failing, then plans against what that apply left."""
    runner = TerraformRunner()
    runner.run(make_ctx(tf_config, plan=runner.plan(make_ctx(tf_config))))
    state = state_file(tf_config)
    hold_state_lock(state)
    handle = state.open("r+")
    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release() -> None:
        fcntl.lockf(handle, fcntl.LOCK_UN)
        handle.close()

    started = time.monotonic()
    threading.Timer(1.5, release).start()
    plan = runner.plan(make_ctx(tf_config, release_version="1.5.0"))

    assert time.monotonic() - started >= 1.5  # it could only plan once the lock was free
    assert {c["address"] for c in plan["resource_changes"]}  # the new release's diff


def test_it_streams_terraform_output_as_it_is_printed(make_ctx, tf_config):
    tf_config["variables"]["apply_delay_seconds"] = 2
    tf_config["variables"]["images"] = {"fraud-api": "${artifact.fraud-api}"}
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    ctx = make_ctx(tf_config, plan=plan)

    runner.run(ctx)

    at = {text: moment for moment, _, text in ctx.log.lines}
    started = next(m for t, m in at.items() if "rolling out fraud-api" in t)
    finished = next(m for t, m in at.items() if "Apply complete!" in t)
    # The provisioner's first line arrived while it was still sleeping.
    assert finished - started >= 1.5


def test_a_rollback_plans_and_applies_the_target_releases_variables(make_ctx, tf_config):
    """A Terraform step rolls back as a deploy of the target release does: its
    variables are planned (approved like any plan) and applied."""
    runner = TerraformRunner()
    first = runner.plan(make_ctx(tf_config))
    first_out = runner.run(make_ctx(tf_config, plan=first))
    images = dict(
        make_ctx(tf_config).artifacts, **{"fraud-api": "repo/fraud-api@sha256:" + "e" * 64}
    )
    second = runner.plan(make_ctx(tf_config, artifacts=images, release_version="1.5.0"))
    second_out = runner.run(
        make_ctx(tf_config, plan=second, previous_outputs=first_out, release_version="1.5.0")
    )
    assert second_out["previous_tfvars"] == first_out["tfvars"]

    back = runner.plan(make_ctx(tf_config))  # the rollback's plan: 1.4.0's variables
    result = runner.run(make_ctx(tf_config, plan=back))

    assert result["outputs"]["release_version"] == "1.4.0"
    assert result["outputs"]["images"]["fraud-api"] == first_out["tfvars"]["images"]["fraud-api"]


def test_it_keeps_secret_references_out_of_the_recorded_variables(make_ctx, tf_config):
    tf_config["variables"]["release_version"] = "${secret.release_token}"
    ctx = make_ctx(tf_config, secret_values={"release_token": "s3cr3t-value"})

    plan = TerraformRunner().plan(ctx)

    assert plan["tfvars"]["release_version"] == "${secret.release_token}"
    assert "s3cr3t-value" not in json.dumps(plan)
    # Terraform itself prints the value; the engine's masking catches it before storage.
    assert "s3cr3t-value" not in Masker(ctx.secret_values).mask(ctx.log.text)
    assert not (ctx.workdir / "gantry.tfvars.json").exists()


def test_it_stops_terraform_when_the_deployment_is_cancelled(make_ctx, tf_config):
    tf_config["variables"]["apply_delay_seconds"] = 30
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    ctx = make_ctx(tf_config, plan=plan)
    record = ctx.log

    def log(text: str, stream: str = "stdout") -> None:
        record(text, stream)
        # Cancel mid-apply, not at a guess of when that is: once a hook's
        # shell has printed (not the "Executing" line before it) and its
        # `sleep` runs.
        if "(local-exec): rolling out" in text:
            deadline = time.monotonic() + 10
            while not hook_commands(tf_config) and time.monotonic() < deadline:
                time.sleep(0.02)
            ctx.cancelled.set()

    ctx.log = log

    with pytest.raises(Cancelled):
        runner.run(ctx)

    assert "Stopping" in record.text
    # The hook's command (its shell's `sleep 30`) ran in a session of its
    # own: stopped with the step, not left to finish the rollout.
    deadline = time.monotonic() + 10
    while hook_commands(tf_config) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook_commands(tf_config) == []


def hook_commands(config: dict) -> list[str]:
    """The rollout hooks' commands still running for this test's Terraform
    (their environment names its data directory)."""
    test_dir = str(Path(config["backend_config"]["workspace_dir"]).parent)
    found = []
    for pid in processes_with(f"{RUN_MARKER}=", test_dir):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if cmdline[0] == b"sleep":
            found.append(b" ".join(cmdline).decode())
    return found


def test_it_names_the_bad_key_in_the_config():
    runner = TerraformRunner()
    with pytest.raises(ValueError, match="path"):
        runner.validate_config({"variables": {}})
    with pytest.raises(ValueError, match="variables"):
        runner.validate_config({"path": "x", "variables": []})
    with pytest.raises(ValueError, match="colour"):
        runner.validate_config({"path": "x", "colour": "blue"})


def test_it_creates_its_workspace_in_a_state_store_that_holds_others(make_ctx, tf_config):
    """Two environments share one state directory: the second one's `init`
    must not stop at Terraform's "select a workspace" prompt."""
    runner = TerraformRunner()
    production = make_ctx(tf_config, environment_name="production")
    runner.run(make_ctx(tf_config, environment_name="production", plan=runner.plan(production)))
    assert state_file(tf_config, "production").exists()

    staging = make_ctx(tf_config)
    plan = runner.plan(staging)
    runner.run(make_ctx(tf_config, plan=plan))

    assert "Creating workspace staging" in staging.log.text
    assert json.loads(state_file(tf_config, "staging").read_text())["resources"]
    # The other environment's state is untouched.
    assert json.loads(state_file(tf_config, "production").read_text())["resources"]


def test_it_applies_without_a_second_init_and_reads_outputs_from_state(make_ctx, tf_config):
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    apply_ctx = make_ctx(tf_config, plan=plan)

    outputs = runner.run(apply_ctx)

    assert "Initializing the backend" not in apply_ctx.log.text
    state = json.loads(state_file(tf_config).read_text())
    assert outputs["outputs"]["images"] == state["outputs"]["images"]["value"]


def test_outputs_the_plan_knows_are_what_the_apply_leaves(make_ctx, tf_config, monkeypatch):
    """Every output of the module is known at plan time: the apply reports
    them from the plan, and they are what `terraform output -json` reads back."""
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    assert plan["planned_outputs"]["release_version"] == "1.4.0"
    apply_ctx = make_ctx(tf_config, plan=plan)
    read_back = []
    original = TerraformSession.outputs
    monkeypatch.setattr(
        TerraformSession, "outputs", lambda self: read_back.append(1) or original(self)
    )

    outputs = runner.run(apply_ctx)

    assert read_back == []  # not asked of Terraform
    assert outputs["outputs"] == plan["planned_outputs"]
    assert (
        outputs["outputs"] == _StepTerraform(apply_ctx, runner.config(apply_ctx)).session.outputs()
    )


def test_an_output_known_only_after_the_apply_is_read_back(make_ctx, tf_config, tmp_path):
    module = tmp_path / "module"
    module.mkdir()
    (module / "main.tf").write_text(
        (MODULE / "main.tf").read_text()
        + '\noutput "release_id" {\n  value = null_resource.release.id\n}\n'
    )
    tf_config["path"] = str(module)
    runner = TerraformRunner()
    plan = runner.plan(make_ctx(tf_config))
    assert plan["planned_outputs"] is None  # the id exists only once the resource does

    outputs = runner.run(make_ctx(tf_config, plan=plan))

    state = json.loads(state_file(tf_config).read_text())
    release = next(r for r in state["resources"] if r["name"] == "release")
    assert outputs["outputs"]["release_id"] == release["instances"][0]["attributes"]["id"]
    assert outputs["outputs"]["release_version"] == "1.4.0"


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=Gantry Tests", "-c", "user.email=t@example.com",
         *args], check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.fixture
def module_repo(tmp_path) -> Path:
    """A git repository holding the module twice: tag v1 says so in an output;
    the commit after it (main's head) says v2."""
    repo = tmp_path / "infra-repo"
    module = repo / "terraform" / "fraud-detector"
    module.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for version in ("v1", "v2"):
        output = f'output "module_version" {{\n  value = "{version}"\n}}\n'
        (module / "main.tf").write_text((MODULE / "main.tf").read_text() + "\n" + output)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"fraud-detector module {version}")
        git(repo, "tag", version)
        if version == "v1":  # the tag a release pipeline would make for 1.4.0
            git(repo, "tag", "release-1.4.0")
    return repo


@pytest.mark.parametrize("ref", ["v1", "commit", "release-${release.version}"])
def test_it_plans_and_applies_the_module_at_a_git_ref(make_ctx, tf_config, module_repo, ref):
    """A git source is cloned at the ref (which may name the release) into the
    step's workdir; the plan and the apply use that checkout, not the branch head."""
    if ref == "commit":  # a pinned commit, as a careful config would have it
        ref = git(module_repo, "rev-parse", "v1")
    del tf_config["path"]
    tf_config["git"] = {"url": f"file://{module_repo}", "ref": ref}
    tf_config["subdir"] = "terraform/fraud-detector"
    runner = TerraformRunner()
    plan_ctx = make_ctx(tf_config)

    plan = runner.plan(plan_ctx)
    outputs = runner.run(make_ctx(tf_config, plan=plan))

    assert f"Fetching file://{module_repo} at {ref.replace('${release.version}', '1.4.0')}" in (
        plan_ctx.log.text
    )
    checkout = plan_ctx.workdir / "source"
    assert git(checkout, "rev-parse", "HEAD") == git(module_repo, "rev-parse", "v1")
    assert outputs["outputs"]["module_version"] == "v1"
    assert outputs["outputs"]["images"]["fraud-api"] == plan_ctx.artifacts["fraud-api"]
    state = json.loads(state_file(tf_config).read_text())
    assert state["outputs"]["module_version"]["value"] == "v1"


def test_it_names_the_git_command_that_failed(make_ctx, tf_config, module_repo):
    del tf_config["path"]
    tf_config["git"] = {"url": f"file://{module_repo}", "ref": "no-such-tag"}

    with pytest.raises(CloudError, match="^git fetch failed: "):
        TerraformRunner().plan(make_ctx(tf_config))
