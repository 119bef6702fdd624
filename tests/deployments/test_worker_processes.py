"""The engine's concurrency and crash claims, proved with REAL processes:
`manage.py rqworker` and `manage.py housekeeping deployments.cron` started as
subprocesses against this test's database and Redis, exactly as `make run`
starts them.

- the environment lock: two workers, two deployments, one environment → one
  run after the other, the second visibly queued meanwhile;
- a worker killed with SIGKILL mid-run → the cron's stalled-run check fails
  the deployment and frees the environment;
- cancelling a running deployment stops its step's subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from rq.job import Job
from rq.registry import FinishedJobRegistry

from deployments.choices import Status, StepStatus
from deployments.models import Deployment, LogLine, Release
from environments.models import Environment, Step
from portal.core.models import AuditEvent
from tests.conftest import env, image
from tests.polling import wait_for
from tests.runners.conftest import moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
PYTHON = str(Path(settings.BASE_DIR) / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():  # a CI image without the project's venv
    PYTHON = sys.executable
QUEUE_NAMES = ("high", "default", "low")
# Prints a few lines over ~2 s: long enough for two runs to overlap if the lock failed.
SHORT_STEP = ["sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 0.5; done"]


def gated_step(gate: Path) -> list[str]:
    """SHORT_STEP, held first until `gate` exists (60 s at most, should the test fail)."""
    wait = f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; "
    return ["sh", "-c", wait + SHORT_STEP[2]]


def long_step(pidfile: Path) -> list[str]:
    """A step that records its pid (exec: the sleep keeps the shell's pid) and waits."""
    return ["sh", "-c", f"echo $$ > {pidfile}; echo started; exec sleep 120"]


@pytest.fixture
def process_env(tmp_path, moto_endpoint, terraform_cli_config) -> dict[str, str]:  # noqa: F811
    """The worker's environment: this test's database (pytest-django's test_*
    copy), the same Redis and keys, and the sandbox settings."""
    database = urlsplit(os.environ["DATABASE_URL"])._replace(
        path=f"/{connection.settings_dict['NAME']}"
    )
    return {
        **os.environ,
        "DATABASE_URL": database.geturl(),
        "DEPLOY_WORKDIR": str(tmp_path / "deployments"),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "TF_CLI_CONFIG_FILE": str(terraform_cli_config),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def spawn(transactional_db, process_env, tmp_path):
    """Start `manage.py <args>` in its own process group; all are stopped at the
    end of the test (before the database is emptied)."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(*args: str) -> subprocess.Popen:
        log = (tmp_path / f"{args[0]}-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [PYTHON, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=process_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: RQ's work horse goes with it
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        stop_group(process)
        log.close()


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def step_pids():
    """pids of step commands; any still sleeping at the end are killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"sleep" in cmdline.read_bytes():
            os.kill(pid, signal.SIGKILL)


def logs(tmp_path: Path) -> str:
    """The processes' output, for assertion messages."""
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))


def command_process(environment: Environment, argv: list[str]) -> None:
    Step.objects.create(
        environment=environment, order=1, name="Migrate", kind="command",
        config={"argv": argv, "timeout_seconds": 300},
    )  # fmt: skip


def read_pid(pidfile: Path) -> int | None:
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return int(text) if text else None


def run_results(queue, *deployments: Deployment) -> list:
    """What the finished jobs of this queue for these deployments returned
    (the registry also holds earlier tests' jobs, for its result TTL)."""
    pks = {d.pk for d in deployments}
    ids = FinishedJobRegistry(queue=queue).get_job_ids()
    jobs = Job.fetch_many(ids, connection=queue.connection)  # None for one expired meanwhile
    return [job.return_value() for job in jobs if job and job.args and job.args[0] in pks]


def status_of(*deployments: Deployment) -> tuple[str, ...]:
    found = dict(
        Deployment.objects.filter(pk__in=[d.pk for d in deployments]).values_list("pk", "status")
    )
    return tuple(found[d.pk] for d in deployments)


def test_it_runs_two_deployments_of_one_environment_one_after_the_other(
    catalog, release, users, queues, spawn, tmp_path
):
    dev = env(catalog, "dev")  # no approvals: requests are queued at once
    # The two workers' start-ups on a loaded machine can be further apart than
    # a step lasts: then one worker ran both and the race never happened. So
    # the first run holds until the other worker has found the environment busy.
    gate = tmp_path / "second-run-turned-away"
    command_process(dev, gated_step(gate))
    newer = Release.register(
        catalog, "1.5.0", {s: image(s, "b") for s in release.artifact_map()}, users["alice"]
    )
    first = Deployment.request(release, dev, users["alice"], "first")
    second = Deployment.request(newer, dev, users["alice"], "second")
    assert status_of(first, second) == (Status.QUEUED, Status.QUEUED)

    workers = [spawn("rqworker", *QUEUE_NAMES, "--burst") for _ in range(2)]
    seen: set[tuple[str, ...]] = set()

    def both_finished() -> bool:
        seen.add(status_of(first, second))
        return all(s in (Status.SUCCEEDED, Status.FAILED) for s in status_of(first, second))

    def turned_away() -> bool:
        seen.add(status_of(first, second))
        return "environment busy; stays queued" in run_results(queues[1], first, second)

    assert wait_for(turned_away, timeout=90, every=0.05), logs(tmp_path)
    gate.touch()
    assert wait_for(both_finished, timeout=90, every=0.05), logs(tmp_path)
    for worker in workers:
        worker.wait(timeout=30)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.SUCCEEDED, Status.SUCCEEDED), (
        first.error,
        second.error,
    )
    # Never both running; the one waiting was visibly queued meanwhile.
    assert (Status.RUNNING, Status.RUNNING) not in seen
    assert {(Status.RUNNING, Status.QUEUED), (Status.QUEUED, Status.RUNNING)} & seen, seen
    earlier, later = sorted((first, second), key=lambda d: d.started_at)
    assert earlier.finished_at <= later.started_at
    steps = [d.step_runs.get(phase="deploy") for d in (earlier, later)]
    assert steps[0].finished_at <= steps[1].started_at
    for deployment in (first, second):
        text = list(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))
        assert [t for t in text if t.startswith("line ")] == [f"line {i}" for i in range(1, 5)]
    # The race really happened: one worker's job found the environment taken.
    results = run_results(queues[1], first, second)
    assert "environment busy; stays queued" in results, results


def test_it_fails_a_run_whose_worker_was_killed_and_frees_the_environment(
    catalog, release, users, queues, spawn, step_pids, tmp_path
):
    dev = env(catalog, "dev")
    pidfile = tmp_path / "step.pid"
    command_process(dev, long_step(pidfile))
    # The housekeeping: the cron process and a worker for its stalled-run
    # checks (queue high only, so the deployment goes to the victim below).
    spawn("housekeeping", "deployments.cron")
    spawn("rqworker", "high")
    deployment = Deployment.request(release, dev, users["alice"], "will lose its worker")
    victim = spawn("rqworker", *QUEUE_NAMES)

    assert wait_for(lambda: read_pid(pidfile), timeout=60), logs(tmp_path)
    step_pids.append(read_pid(pidfile))
    deployment.refresh_from_db()
    assert deployment.status == Status.RUNNING
    # The job runs in the worker process itself (deployments.worker.DeployWorker):
    # its pid ends the worker name the run recorded.
    assert int(deployment.worker_name.rsplit(":", 1)[1]) == victim.pid
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()

    # Takes 20-30 s (a heartbeat older than STALE_AFTER, found by a check every 10 s);
    # the rest is a loaded machine's margin.
    assert wait_for(lambda: status_of(deployment) == (Status.FAILED,), timeout=120, every=0.2), (
        logs(tmp_path)
    )
    took = time.monotonic() - killed_at
    orphan = Path(f"/proc/{step_pids[0]}").exists()
    print(f"\nkilled worker → deployment failed in {took:.1f} s; step process left: {orphan}")
    # The wait above is generous so a slow run still reports; the requirement is 60 s.
    assert took <= 60, f"the killed worker's run took {took:.1f} s to fail (at most 60 s)"
    deployment.refresh_from_db()
    assert "stopped responding" in deployment.error
    assert deployment.worker_name and deployment.worker_name in deployment.error
    assert AuditEvent.objects.filter(
        action="deployment.failed", target_id=str(deployment.pk)
    ).exists()

    # The environment is free again: the next deployment runs to the end.
    Step.objects.filter(environment=dev).update(config={"argv": SHORT_STEP})
    newer = Release.register(
        catalog, "1.5.0", {s: image(s, "b") for s in release.artifact_map()}, users["alice"]
    )
    after = Deployment.request(newer, dev, users["alice"], "after the crash")
    spawn("rqworker", *QUEUE_NAMES, "--burst")
    assert wait_for(lambda: status_of(after) == (Status.SUCCEEDED,), timeout=60), logs(tmp_path)


def test_it_cancels_a_running_deployment_and_stops_its_command(
    catalog, release, users, queues, spawn, step_pids, tmp_path
):
    dev = env(catalog, "dev")
    pidfile = tmp_path / "step.pid"
    command_process(dev, long_step(pidfile))
    deployment = Deployment.request(release, dev, users["alice"], "to be cancelled")
    spawn("rqworker", *QUEUE_NAMES, "--burst")

    pid = wait_for(lambda: read_pid(pidfile), timeout=60)
    assert pid, logs(tmp_path)
    step_pids.append(pid)
    assert Path(f"/proc/{pid}").exists()
    deployment.refresh_from_db()
    deployment.cancel(users["alice"], "wrong window")
    asked_at = time.monotonic()

    # Seen at the run's next heartbeat (2 s); the rest is a loaded machine's margin.
    assert wait_for(lambda: status_of(deployment) == (Status.CANCELLED,), timeout=60), logs(
        tmp_path
    )
    print(f"\ncancel → cancelled in {time.monotonic() - asked_at:.1f} s")
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    assert deployment.step_runs.get(phase="deploy").status == StepStatus.CANCELLED
    actions = set(
        AuditEvent.objects.filter(target_id=str(deployment.pk)).values_list("action", flat=True)
    )
    assert {"deployment.cancel_requested", "deployment.cancelled"} <= actions
