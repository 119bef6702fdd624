"""Fault: Redis stopped for 30 s in the middle of a running deployment, then
started again (empty: it keeps no data, as a Redis restarted without
persistence).

A command step prints numbered lines; Redis goes away after the first ones
and the step ends while it is still away, so the job also ends without
Redis (where RQ itself would quit the worker). Required: the step and the
deployment finish cleanly; every line is in the database and reaches a viewer
who reconnects; /health/ready says 503 naming Redis meanwhile; the worker,
the web process and the housekeeping go on without a restart, and the next
deployment runs with its log live.
"""

from __future__ import annotations

import json
import time

import pytest

from deployments.choices import Status
from deployments.models import Deployment, LogLine, Release
from environments.models import Step
from tests.conftest import env, image
from tests.faults.conftest import suite_database_url
from tests.faults.processes import portal_env, record
from tests.faults.viewers import LogViewer, session_cookie
from tests.polling import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
OUTAGE_SECONDS = 30  # the fault itself: how long Redis stays stopped
LINES = 150
# ~15 s of output: it starts before the outage and ends inside it.
PRINTS = ["sh", "-c", f'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.1; done']


def stored_texts(deployment: Deployment) -> list[str]:
    return list(
        LogLine.objects.filter(deployment=deployment).order_by("seq").values_list("text", flat=True)
    )


def status_of(deployment: Deployment) -> str:
    return Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)


def test_a_running_deployment_outlives_30_s_without_redis(
    catalog, release, users, portal, redis_server, tmp_path
):
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Migrate", kind="command",
                        config={"argv": PRINTS, "timeout_seconds": 300})  # fmt: skip
    portal.env = portal_env(
        database_url=suite_database_url(), redis_url=redis_server.url, workdir=tmp_path
    )
    web, worker, housekeeping = portal.web(), portal.worker(), portal.housekeeping()
    cookie = session_cookie(users["dave"])  # a viewer

    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
    viewer = LogViewer(portal, deployment.pk, cookie)
    assert wait_for(
        lambda: LogLine.objects.filter(deployment=deployment, text="line 10").exists(), 90
    ), portal.logs()

    redis_server.stop()
    stopped_at = time.monotonic()
    ready, answer = portal.get("/health/ready")
    assert ready == 503 and json.loads(answer)["failed"] == ["redis"], answer
    # The step and the run end while Redis is away.
    assert wait_for(lambda: status_of(deployment) != Status.RUNNING, OUTAGE_SECONDS - 2), (
        portal.logs()
    )
    ended_after = time.monotonic() - stopped_at
    assert status_of(deployment) == Status.SUCCEEDED, Deployment.objects.get(pk=deployment.pk).error
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
    ready_while_down = portal.get("/health/ready")[0]

    redis_server.start()
    back_at = time.monotonic()
    outage = back_at - stopped_at
    assert wait_for(lambda: portal.get("/health/ready")[0] == 200, 60), portal.logs()
    ready_after = time.monotonic() - back_at

    # Every line printed is stored, in order, once.
    texts = [t for t in stored_texts(deployment) if t.startswith("line ")]
    assert texts == [f"line {i}" for i in range(1, LINES + 1)]
    stored = list(LogLine.objects.filter(deployment=deployment).values_list("seq", flat=True))
    assert sorted(stored) == list(range(1, len(stored) + 1))
    # A viewer who reconnects gets the rest from where it was.
    seen_live = viewer.last_seq
    viewer.close()
    again = LogViewer(portal, deployment.pk, cookie, after=seen_live)
    assert again.wait_status(Status.SUCCEEDED, 30), again.statuses
    again.close()
    received = viewer.lines + again.lines
    assert [seq for seq, _ in received] == list(range(1, len(stored) + 1))
    assert [text for _, text in received] == stored_texts(deployment)

    # The same worker takes the next deployment; its log reaches a live viewer.
    Step.objects.filter(environment=dev).update(
        config={"argv": ["sh", "-c", "echo after; echo the outage"], "timeout_seconds": 60}
    )
    newer = Release.register(
        catalog, "1.5.0", {s: image(s, "b") for s in release.artifact_map()}, users["alice"]
    )
    requested_at = time.monotonic()
    following = Deployment.request(newer, dev, users["alice"], "after the outage")
    live = LogViewer(portal, following.pk, cookie)
    assert wait_for(lambda: status_of(following) == Status.SUCCEEDED, 60), portal.logs()
    next_done = time.monotonic() - requested_at
    assert live.wait_status(Status.SUCCEEDED, 30), (live.statuses, portal.logs())
    assert [t for _, t in live.lines][-3:-1] == ["after", "the outage"]
    live.close()
    assert all(portal.alive(p) for p in (web, worker, housekeeping)), portal.logs()

    assert ready_while_down == 503
    record(
        "redis stopped 30 s mid-run",
        outage_s=round(outage, 1), run_ended_during_outage_after_s=round(ended_after, 1),
        final_status=Status.SUCCEEDED, lines_printed=LINES, lines_stored=len(texts),
        lines_lost=LINES - len(texts), viewer_live_lines=seen_live,
        viewer_after_reconnect_lines=len(again.lines),
        ready_200_after_redis_back_s=round(ready_after, 1),
        next_deployment_succeeded_in_s=round(next_done, 1), restarts=0,
    )  # fmt: skip
