"""A deployment's threads (the log's storer, the heartbeat, the dashboard's
card builder) take their database connections from the process's pool and
give them back: a worker that ran many deployments holds none of theirs, and
runs after the first open no new PostgreSQL backend. A thread that kept one
would drain the pool until every job waited DB_POOL_TIMEOUT and failed."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Deployment
from environments import live
from environments.models import Step
from tests.conftest import env, work

pytestmark = pytest.mark.django_db(transaction=True)


def checked_out() -> int:
    """Connections of the pool in use now (this thread's own among them)."""
    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


def backends_started_since(moment: datetime.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_start > %s",
            [moment],
        )
        return cursor.fetchone()[0]


def test_runs_give_back_every_connection_and_open_no_new_backend(release, users, catalog, queues):
    if connection.pool is None:
        pytest.skip("connections are pooled on PostgreSQL only")
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Migrate", kind="command",
                        config={"argv": ["sh", "-c", "echo migrating; echo done"]})  # fmt: skip

    def deploy(reason: str) -> Deployment:
        deployment = Deployment.request(release, dev, users["alice"], reason)
        work(queues)
        live.flush()
        deployment.refresh_from_db()
        assert deployment.status == Status.SUCCEEDED, deployment.error
        return deployment

    deploy("warms the pool")
    assert checked_out() == 1  # this thread's
    since = timezone.now()
    for number in range(connection.pool.max_size + 2):  # more runs than the pool has room
        deploy(f"run {number}")
        assert checked_out() == 1
    assert backends_started_since(since) == 0
