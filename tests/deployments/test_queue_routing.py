"""Which queue each job lands on: rollbacks (their plans too) on `high`, so a
worker busy with deploys takes them first; deploys and plans on `default`;
housekeeping on `low`, except the two jobs that keep deployments moving:
failing a stalled run (its environment is locked until then) on `high`, and
waking queued requests on `default`, next to the runs it starts."""

from __future__ import annotations

import django_rq
import pytest
import redis.connection
from django.conf import settings
from django.test import override_settings
from rq.cron import CronScheduler

from deployments.choices import Kind
from deployments.models import Deployment, Release, queueing
from deployments.rollback import request_rollback
from environments.models import Step
from tests.conftest import env, image

pytestmark = pytest.mark.django_db(transaction=True)


def jobs_on(queues) -> dict[str, list[str]]:
    return {q.name: [job.func_name.rpartition(".")[2] for job in q.get_jobs()] for q in queues}


def test_deploys_go_to_default_and_rollbacks_to_high(catalog, release, users, queues):
    # Nothing runs here: the jobs only wait in Redis.
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Smoke", kind="command",
                        config={"argv": ["true"]})  # fmt: skip
    deploy = Deployment.request(release, dev, users["alice"], "ship 1.4.0")
    assert jobs_on(queues) == {"high": [], "default": ["run_deployment"], "low": []}

    # A rollback needs a release that ran here and one that runs now.
    images = {s: image(s, "b") for s in ("fraud-api", "fraud-ml", "fraud-worker")}
    newer = Release.register(catalog, "1.5.0", images, users["alice"])
    for done in (deploy, Deployment.request(newer, dev, users["alice"], "ship 1.5.0")):
        Deployment.objects.filter(pk=done.pk).update(
            status="succeeded", finished_at=done.created_at
        )
    for queue in queues:
        queue.empty()
    rollback = request_rollback(dev, users["alice"], "1.5.0 misbehaves")
    assert rollback.kind == Kind.ROLLBACK
    assert jobs_on(queues) == {"high": ["run_deployment"], "default": [], "low": []}


def test_the_periodic_jobs_queues():
    scheduler = CronScheduler(connection=django_rq.get_connection("low"))
    scheduler.load_config_from_file("deployments.cron")
    assert {job.func.__name__: job.queue_name for job in scheduler.get_jobs()} == {
        "fail_stalled_deployments": "high",
        "wake_waiting_deployments": "default",
        "expire_stale_requests": "low",
        "verify_audit_chain": "low",
        "fetch_costs": "low",
        "poll_alarms": "low",
        "sweep_drift": "low",
    }


@pytest.fixture
def sockets_opened(monkeypatch) -> list:
    """Each TCP connection this process opens to Redis, as it opens (the real
    connect runs). Counted here, not by the server: the suite's other worker
    connects to the same Redis at any moment."""
    opened = []
    real = redis.connection.Connection._connect

    def counted(connection):
        opened.append(connection.port)
        return real(connection)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted)
    return opened


ELSEWHERE = "redis://127.0.0.1:1/0"


def test_requests_reuse_one_redis_connection(catalog, release, users, queues, sockets_opened):
    """Checking the queue and enqueueing go over a kept connection: no new TCP
    connection (and handshake) per request, as django_rq alone would make."""
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Smoke", kind="command",
                        config={"argv": ["true"]})  # fmt: skip
    Deployment.request(release, dev, users["alice"], "warm up")  # the kept connection opens
    sockets_opened.clear()  # (or an earlier test of this process opened it)
    for n in range(3):
        dev.deployments.update(status="cancelled")  # one open request per environment
        Deployment.request(release, dev, users["alice"], f"ship {n}")
    assert sockets_opened == []
    assert len(queues[1].get_jobs()) == 4
    # Same address, one client; the settings are read at each call.
    assert queueing.connection("high") is queueing.connection("default")
    moved = {**settings.RQ_QUEUES, "low": {**settings.RQ_QUEUES["low"], "URL": ELSEWHERE}}
    with override_settings(RQ_QUEUES=moved):
        assert queueing.connection("low").connection_pool.connection_kwargs["port"] == 1
