"""Deploy engine, overhead: the same Terraform plan + apply of
infra/terraform/fraud-detector (null provider from the sandbox's filesystem
mirror), run by the CLI directly and through the portal's TerraformRunner
(plan, then run, with a LogWriter as the log), alternating, each from an
empty state. Goal: median portal / median CLI ≤ 1.05.

The CLI side is what an engineer would type: `terraform init`, `plan -out`,
`apply <plan>`, output read through pipes. The portal side is everything the
engine does for a Terraform step, which is one process more: `plan` also
runs `show -json` (the diff approvers see and the cost estimate prices);
`run` applies the saved plan in the data dir the plan initialised; the
outputs come from the plan when it knows them all (this module's do), else
from `terraform output -json`. "cli_same" runs by the CLI what a person
would need for the same result (`show -json`, a second `init`, `output
-json`), which isolates the runner's own cost. The per-phase times show where the
difference goes; --apply-delay adds a rollout to the apply.

python -m bench.bench_terraform [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.bench_logs import SERVICES, image, machine, seed, setup_engine_django  # noqa: E402

GOAL_RATIO = 1.05
MODULE = common.ROOT / "infra" / "terraform" / "fraud-detector"
WORKSPACE = "staging"
RELEASE = "1.4.0"


# Seconds each service's rollout hook sleeps during the apply (0: a no-op
# apply, the worst case for a fixed per-run cost; --apply-delay for a run
# closer to a real rollout, which takes minutes).
APPLY_DELAY = 0


def variables() -> dict:
    return {
        "environment": WORKSPACE,
        "release_version": RELEASE,
        "images": {service: image(service, "a") for service in SERVICES},
        "apply_delay_seconds": APPLY_DELAY,
    }


def terraform_env(workdir: Path, cli_config: Path) -> dict[str, str]:
    """The environment the portal gives terraform (runners.terraform._Session)."""
    from portal.cloud.process import base_environment

    return base_environment(
        {
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "TF_WORKSPACE": WORKSPACE,
            "TF_DATA_DIR": str(workdir / "tf-data"),
            "TF_CLI_CONFIG_FILE": str(cli_config),
        }
    )


def run_cli(workdir: Path, state_dir: Path, cli_config: Path, same_as_portal: bool = False) -> dict:
    """init, plan -out, apply: the commands as a person would run them; with
    same_as_portal, also the portal's extra commands (show -json, a second
    init, output -json), which isolates the runner's own cost."""
    from portal.cloud.terraform import terraform_binary

    terraform = terraform_binary()
    workdir.mkdir(parents=True)
    var_file = workdir / "vars.tfvars.json"
    var_file.write_text(json.dumps(variables()))
    plan = workdir / "terraform.tfplan"
    env = terraform_env(workdir, cli_config)
    commands = {
        "init": [terraform, "init", "-input=false", "-no-color",
                 f"-backend-config=workspace_dir={state_dir}"],
        "plan": [terraform, "plan", "-input=false", "-no-color", "-lock-timeout=0s",
                 "-detailed-exitcode", f"-var-file={var_file}", f"-out={plan}"],
        "apply": [terraform, "apply", "-input=false", "-no-color", "-lock-timeout=0s",
                  "-auto-approve", str(plan)],
    }  # fmt: skip
    if same_as_portal:
        commands = {
            "init": commands["init"], "plan": commands["plan"],
            "show": [terraform, "show", "-json", "-no-color", str(plan)],
            "init2": commands["init"], "apply": commands["apply"],
            "output": [terraform, "output", "-json", "-no-color"],
        }  # fmt: skip
    applied = ""
    phases = {}
    for name, argv in commands.items():
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=MODULE, env=env, capture_output=True, text=True)
        phases[name] = time.perf_counter() - started
        if done.returncode not in ((0, 2) if name == "plan" else (0,)):
            raise RuntimeError(f"terraform {name} failed: {done.stderr[-2000:]}")
        applied = done.stdout if name == "apply" else applied
    if "Apply complete! Resources: 4 added" not in applied:
        raise RuntimeError(f"unexpected apply output: {applied[-500:]}")
    return phases


def run_portal(deployment, workdir: Path, state_dir: Path) -> dict:
    """TerraformRunner.plan then .run, logging through a LogWriter."""
    from deployments.logs import LogWriter
    from deployments.runners.base import StepContext
    from deployments.runners.terraform import TerraformRunner
    from portal.cloud.masking import Masker

    config = {
        "path": str(MODULE),
        "workspace": "${environment}",
        "variables": {"environment": "${environment}", "release_version": "${release.version}",
                      "images": {s: f"${{artifact.{s}}}" for s in SERVICES},
                      "apply_delay_seconds": APPLY_DELAY},
        "backend_config": {"workspace_dir": str(state_dir)},
    }  # fmt: skip
    phases = {}
    started = time.perf_counter()
    writer = LogWriter(deployment.pk, Masker(deployment.environment.secret_variables))
    ctx = StepContext(
        config=config, workdir=workdir, log=writer, environment_name=WORKSPACE,
        release_version=RELEASE, artifacts=variables()["images"],
    )  # fmt: skip
    runner = TerraformRunner()
    ctx.plan = runner.plan(ctx)
    phases["plan"] = time.perf_counter() - started
    applied = time.perf_counter()
    outputs = runner.run(ctx)
    writer.close()
    phases["run"] = time.perf_counter() - applied
    # The module's outputs, all known at plan time (else read with `terraform output -json`).
    if outputs.get("outputs", {}).get("release_version") != ctx.release_version:
        raise RuntimeError(f"unexpected apply result: {outputs}")
    return phases


def run(runs: int = 5) -> dict:
    """Needs setup_engine_django() first; TF_CLI_CONFIG_FILE is set up here."""
    from deployments.models import Deployment
    from deployments.sandbox import setup_terraform_mirror

    base = Path(tempfile.mkdtemp(prefix="gantry-bench-terraform-"))
    cli_config = setup_terraform_mirror(base / "terraform")
    os.environ["TF_CLI_CONFIG_FILE"] = str(cli_config)  # the portal passes it through
    world = seed("terraform", [{"name": "Note", "kind": "command", "config": {"argv": ["true"]}}])
    deployment = Deployment.request(
        world["release"], world["staging"], world["users"]["alice"], "terraform benchmark"
    )
    rows: dict[str, list[dict]] = {"cli": [], "portal": [], "cli_same": []}
    for index in range(runs):
        # Alternate the order, so drift in the machine's load hits all three.
        order = ("cli", "portal", "cli_same") if index % 2 == 0 else ("cli_same", "portal", "cli")
        for who in order:
            workdir, state_dir = base / f"{who}-{index}", base / f"{who}-{index}-state"
            started = time.perf_counter()
            if who == "portal":
                phases = run_portal(deployment, workdir, state_dir)
            else:
                phases = run_cli(workdir, state_dir, cli_config, same_as_portal=who == "cli_same")
            rows[who].append({"total": time.perf_counter() - started, **phases})

    def medians(rows: list[dict]) -> dict:
        return {key: round(common.median([row[key] for row in rows]), 3) for key in rows[0]}

    cli, portal, same = (medians(rows[who]) for who in ("cli", "portal", "cli_same"))
    ratio = portal["total"] / cli["total"]
    return {
        "runs": runs,
        "cli_seconds_median": cli,
        "portal_seconds_median": portal,
        "cli_same_commands_seconds_median": same,
        "totals": {who: [round(row["total"], 3) for row in rows[who]] for who in rows},
        "ratio_portal_cli": round(ratio, 3),
        "ratio_portal_cli_same_commands": round(portal["total"] / same["total"], 3),
        "goal_ratio": GOAL_RATIO,
        "met": ratio <= GOAL_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apply-delay", type=float, default=0, help="seconds per rollout hook")
    parser.add_argument("--keep", action="store_true", help="reuse gantry_bench_engine")
    args = parser.parse_args(argv)
    setup_engine_django(fresh=not args.keep)
    global APPLY_DELAY
    APPLY_DELAY = args.apply_delay
    result = {"machine": machine(), "terraform": {**run(args.runs), "apply_delay": APPLY_DELAY}}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
