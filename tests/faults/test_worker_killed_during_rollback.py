"""Fault: the worker running a rollback is killed with SIGKILL mid-step (the
same fault during a forward deployment is tests/deployments/
test_worker_processes.py). Required: the rollback fails within a minute (the
housekeeping's stalled-run check), its step's process dies with the worker,
the environment is free again and the next deployment runs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from deployments.rollback import request_rollback
from environments.models import Step
from portal.core.models import AuditEvent
from tests.conftest import env, image
from tests.deployments.test_worker_processes import long_step, read_pid
from tests.faults.conftest import suite_database_url
from tests.faults.processes import portal_env, record
from tests.polling import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FAILS_WITHIN = 60  # the stalled-run check: a heartbeat older than 20 s, checked every 10 s


def status_of(deployment: Deployment) -> str:
    return Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)


def test_a_rollback_whose_worker_was_killed_fails_and_frees_the_environment(
    catalog, release, users, portal, redis_server, tmp_path
):
    dev = env(catalog, "dev")
    pidfile = tmp_path / "rollback.pid"
    # Deploying is quick; undoing it (the rollback command) takes long.
    Step.objects.create(environment=dev, order=1, name="Migrate", kind="command", config={
        "argv": ["sh", "-c", "echo migrated to ${release.version}"],
        "rollback_argv": long_step(pidfile), "timeout_seconds": 300,
    })  # fmt: skip
    portal.env = portal_env(
        database_url=suite_database_url(), redis_url=redis_server.url, workdir=tmp_path
    )
    portal.housekeeping()
    victim = portal.worker()
    newer = Release.register(
        catalog, "1.5.0", {s: image(s, "b") for s in release.artifact_map()}, users["alice"]
    )
    for shipped in (release, newer):
        deployment = Deployment.request(shipped, dev, users["alice"], f"ship {shipped.version}")
        assert wait_for(lambda d=deployment: status_of(d) == Status.SUCCEEDED, 60), portal.logs()

    rollback = request_rollback(dev, users["alice"], "1.5.0 misbehaves")
    assert rollback.kind == Kind.ROLLBACK
    assert wait_for(lambda: read_pid(pidfile), 60), portal.logs()
    step_pid = read_pid(pidfile)
    assert status_of(rollback) == Status.RUNNING
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    # The housekeeping's jobs (the stalled-run check is on `high`) need a worker again.
    portal.worker("high")

    failed = wait_for(lambda: status_of(rollback) == Status.FAILED, 120, every=0.2)
    took = time.monotonic() - killed_at
    assert failed, portal.logs()
    rollback.refresh_from_db()
    assert "stopped responding" in rollback.error
    assert AuditEvent.objects.filter(
        action="deployment.failed", target_id=str(rollback.pk)
    ).exists()
    assert wait_for(lambda: not Path(f"/proc/{step_pid}").exists(), 30)  # died with its worker
    assert not Deployment.objects.filter(environment=dev, status=Status.RUNNING).exists()

    # The environment is free: the next deployment runs to the end.
    fixed = Release.register(
        catalog, "1.5.1", {s: image(s, "c") for s in release.artifact_map()}, users["alice"]
    )
    after = Deployment.request(fixed, dev, users["alice"], "the fix, after the crash")
    portal.worker()
    assert wait_for(lambda: status_of(after) == Status.SUCCEEDED, 60), portal.logs()
    assert took <= FAILS_WITHIN, f"the killed rollback took {took:.1f} s to fail (at most 60 s)"
    record(
        "worker SIGKILL during a rollback", rollback_failed_after_s=round(took, 1),
        step_process_left=False, next_deployment=Status.SUCCEEDED,
    )  # fmt: skip
