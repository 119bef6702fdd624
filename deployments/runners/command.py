"""`command` steps (an ansible-playbook, a migration, a pipeline CLI), and the
subprocess streaming that the terraform runner shares.

Commands are argv lists, never shell strings: a value from a release or an
environment can't turn into shell syntax.

Config::

    {"argv": ["ansible-playbook", "site.yml", "-e", "version=${release.version}"],
     "env": {"DB_PASSWORD": "${secret.db_password}"}, "cwd": "ops",
     "timeout_seconds": 600, "ok_exit_codes": [0],
     "rollback_argv": ["ansible-playbook", "rollback.yml"]}
"""

from __future__ import annotations

import shlex

from deployments.runners.base import Runner, StepContext, StepFailed
from portal.cloud.process import base_environment, stream_process


class CommandRunner(Runner):
    kind = "command"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        return self._run_argv(ctx, config, config["argv"])

    def rollback(self, ctx: StepContext) -> dict:
        """Run rollback_argv, with the target release in the context (${release.version})."""
        config = self.config(ctx)
        if not config["rollback_argv"]:
            ctx.log("No rollback command configured; nothing to undo.", "system")
            return {"skipped": True}
        return self._run_argv(ctx, config, config["rollback_argv"])

    def _run_argv(self, ctx: StepContext, config: dict, argv: list[str]) -> dict:
        cwd = ctx.workdir / config["cwd"] if config["cwd"] else ctx.workdir
        # Log the argv as configured, before `${secret.…}` references are filled in.
        ctx.log(f"$ {shlex.join(argv)}  (in {cwd})", "system")
        argv = ctx.expand(argv)
        env = base_environment(ctx.expand(config["env"]))
        returncode, stderr_lines = stream_process(
            argv, log=ctx.log, cancelled=ctx.cancelled, env=env, cwd=cwd,
            timeout=config["timeout_seconds"],
        )  # fmt: skip
        if returncode not in config["ok_exit_codes"]:
            last = f": {stderr_lines[-1]}" if stderr_lines else ""
            raise StepFailed(f"{argv[0]} exited with code {returncode}{last}")
        return {"exit_code": returncode}
