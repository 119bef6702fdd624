"""Fault: PostgreSQL restarted in the middle of a running deployment (a
cluster of the test's own, stopped with pg_ctl's fast mode, kept down a few
seconds, started again).

Required: the run fails or resumes, never stays `running`; no log line is
lost; no audit event is lost or duplicated, and the chain verifies after
(`manage.py verify_audit`). What happens: the step's process never needed the
database; the heartbeat misses a few beats and beats again, the log's storer
retries on a new connection, and the run's bookkeeping waits for the
database (jobs.with_database): the run resumes and succeeds.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import pytest
from django.db import connections

from deployments.choices import Status
from deployments.models import Deployment, LogLine
from environments.models import Step
from portal.core import tokens
from portal.core.models import AuditEvent
from tests.conftest import env
from tests.faults.processes import PYTHON, ROOT, portal_env, record
from tests.polling import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
DOWN_SECONDS = 5  # the fault itself: how long the database stays stopped
LINES = 200
PRINTS = ["sh", "-c", f'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.1; done']


def status_of(deployment: Deployment) -> str:
    return Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)


def test_a_running_deployment_outlives_a_restart_of_postgresql(
    postgres, redis_server, catalog, release, users, portal, tmp_path
):
    dev = env(catalog, "dev")  # created in the test's own cluster
    Step.objects.create(environment=dev, order=1, name="Migrate", kind="command",
                        config={"argv": PRINTS, "timeout_seconds": 300})  # fmt: skip
    portal.env = portal_env(database_url=postgres.url, redis_url=redis_server.url, workdir=tmp_path)
    worker, housekeeping = portal.worker(), portal.housekeeping()
    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
    assert wait_for(
        lambda: LogLine.objects.filter(deployment=deployment, text="line 20").exists(), 90
    ), portal.logs()

    connections.close_all()
    stopped_at = time.monotonic()
    postgres.stop("fast")
    time.sleep(DOWN_SECONDS)
    postgres.start()
    back_at = time.monotonic()
    down = back_at - stopped_at

    final = wait_for(
        lambda: status_of(deployment) if status_of(deployment) != Status.RUNNING else None, 180
    )
    settled_after = time.monotonic() - back_at
    assert final, portal.logs()
    deployment.refresh_from_db()
    assert final == Status.SUCCEEDED, (deployment.error, portal.logs())

    texts = list(
        LogLine.objects.filter(deployment=deployment).order_by("seq").values_list("text", flat=True)
    )
    printed = [t for t in texts if t.startswith("line ")]
    assert printed == [f"line {i}" for i in range(1, LINES + 1)]
    seqs = list(LogLine.objects.filter(deployment=deployment).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, len(seqs) + 1))

    actions = Counter(
        AuditEvent.objects.filter(
            target_id=str(deployment.pk), action__startswith="deployment."
        ).values_list("action", flat=True)
    )
    assert actions == Counter(
        {"deployment.requested": 1, "deployment.started": 1, "deployment.succeeded": 1}
    )
    verified = subprocess.run(
        [PYTHON, "manage.py", "verify_audit"], cwd=ROOT, env=portal.env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert portal.alive(worker) and portal.alive(housekeeping), portal.logs()
    assert settled_after <= 60
    record(
        "postgresql restarted mid-run",
        database_down_s=round(down, 1), final_status=final,
        finished_after_database_back_s=round(settled_after, 1), lines_printed=LINES,
        lines_lost=LINES - len(printed), audit_events=dict(actions), duplicated_events=0,
        verify_audit=verified.stdout.strip().splitlines()[-1] if verified.stdout else "",
    )  # fmt: skip


def test_while_it_is_down_requests_answer_503_and_after_a_restart_everything_works(
    postgres, redis_server, catalog, release, users, portal, tmp_path
):
    """The web, the worker and the scheduler as deployed: connections from
    each process's pool, kept between requests and jobs. PostgreSQL stops for
    a while: requests answer 503 naming the database, each once the web's
    pool wait (2 s here) runs out. It starts again: requests answer at once
    (the pool does not sit out a retry delay grown during the outage), and
    the next deployment runs with every line stored, rather than meet one of
    the pools' dead connections (a 500, a failed job)."""
    dev, staging = env(catalog, "dev"), env(catalog, "staging")
    prints = ["sh", "-c", "for i in 1 2 3; do echo line $i; done"]
    for environment in (dev, staging):
        Step.objects.create(environment=environment, order=1, name="Migrate", kind="command",
                            config={"argv": prints})  # fmt: skip
    staging.required_approvals = 0
    staging.save(update_fields=["required_approvals"])
    _, key = tokens.issue(users["alice"], "fault test")
    auth = {"Authorization": f"Token {key}"}
    path = "/api/v1/deployments/{}/"
    portal.env = portal_env(database_url=postgres.url, redis_url=redis_server.url,
                            workdir=tmp_path)  # fmt: skip
    worker, housekeeping = portal.worker(), portal.housekeeping()
    portal.env = {**portal.env, "DB_POOL_TIMEOUT": "2"}
    web = portal.web()
    first = Deployment.request(release, dev, users["alice"], "before the restart")
    assert wait_for(lambda: status_of(first) == Status.SUCCEEDED, 90), portal.logs()
    status, body = portal.get(path.format(first.pk), auth)
    assert status == 200, body

    connections.close_all()
    postgres.stop("fast")
    stopped_at, answers = time.monotonic(), []
    while time.monotonic() - stopped_at < DOWN_SECONDS * 2:
        asked_at = time.monotonic()
        status, body = portal.get(path.format(first.pk), auth)
        answers.append((status, time.monotonic() - asked_at))
        assert status == 503, body
        assert "did not give this request a connection" in json.loads(body)["detail"]
    assert max(took for _, took in answers) < 10
    postgres.start()
    back_at = time.monotonic()

    assert wait_for(lambda: portal.get(path.format(first.pk), auth)[0] == 200, 60), portal.logs()
    answering_after = time.monotonic() - back_at
    assert answering_after < 10
    second = Deployment.request(release, staging, users["alice"], "after the restart")
    final = wait_for(lambda: status_of(second) if status_of(second) not in (
        Status.QUEUED, Status.RUNNING) else None, 120)  # fmt: skip
    succeeded_after = time.monotonic() - back_at
    second.refresh_from_db()
    assert final == Status.SUCCEEDED, (second.error, portal.logs())
    texts = list(
        LogLine.objects.filter(deployment=second).order_by("seq").values_list("text", flat=True)
    )
    assert [t for t in texts if t.startswith("line ")] == ["line 1", "line 2", "line 3"]
    seqs = list(LogLine.objects.filter(deployment=second).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert all(portal.alive(process) for process in (worker, housekeeping, web)), portal.logs()
    record(
        "postgresql down between runs (pooled connections)",
        database_down_s=round(back_at - stopped_at, 1), requests_while_down=len(answers),
        status_while_down=503, slowest_503_s=round(max(took for _, took in answers), 1),
        answering_after_s=round(answering_after, 1), deployment_after_restart=final,
        succeeded_after_s=round(succeeded_after, 1), lines_lost=0,
    )  # fmt: skip
