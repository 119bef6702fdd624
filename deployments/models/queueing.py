"""Handing work to the RQ workers without ever losing a row to a lost job.

A request checks that the queue answers before it writes anything
(`check_queue`): with Redis down it is refused with a 503 naming Redis and
nothing is written, so a client may simply send it again. Jobs are enqueued
once the transaction commits (`enqueue_on_commit`); should Redis fail in
between, the committed change stands and the enqueue is only logged: the
housekeeping job `deployments.jobs.wake_waiting_deployments` finds every row
still waiting for a job (planning, queued) and enqueues it again. Job ids
start with what they do and the deployment's id (`plan-42-…`), which is how
that sweeper tells a job still waiting in a queue from one that was lost.
"""

from __future__ import annotations

import logging
import uuid

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError
from rq import Queue

from portal.core.redis_clients import redis_client
from portal.core.roles import Unavailable

log = logging.getLogger(__name__)

QUEUE_DOWN = (
    "The job queue (Redis) is not answering, so no worker could take this; nothing was "
    "requested. Try again in a minute; if it persists, the portal's Redis is down."
)


def connection(queue_name: str) -> redis.Redis:
    """The queue's Redis client, kept per process and address
    (portal/core/redis_clients.py): django_rq builds a new one at every call,
    and a request that enqueues asks twice. The settings are read at each
    call, as django_rq reads them; configurations other than a plain URL
    (sentinels, TLS options) go through django_rq."""
    config = settings.RQ_QUEUES[queue_name]
    if set(config) - {"URL", "DEFAULT_TIMEOUT"} or not config["URL"].startswith("redis://"):
        return django_rq.get_connection(queue_name)
    return redis_client(config["URL"])


def get_queue(queue_name: str, **options) -> Queue:
    """django_rq's queue on the kept connection (see `connection`)."""
    return django_rq.get_queue(queue_name, connection=connection(queue_name), **options)


def check_queue(queue_name: str) -> None:
    """Refuse up front (Unavailable, 503) when the queue's Redis does not
    answer. A refused connection fails in a few ms; a silent host within the
    connection's socket timeout."""
    try:
        connection(queue_name).ping()
    except RedisError as exc:
        log.warning("queue %s unreachable: %s", queue_name, type(exc).__name__)
        raise Unavailable(QUEUE_DOWN) from None


def job_id(prefix: str, deployment_id: int) -> str:
    """`<prefix>-<deployment id>-<random>`: unique per enqueue (RQ keeps a
    job's results under its id), yet read back by `waiting_deployments`."""
    return f"{prefix}-{deployment_id}-{uuid.uuid4().hex[:12]}"


def waiting_deployments(queue_name: str, prefix: str) -> set[int]:
    """Ids of the deployments that have a `prefix` job waiting in the queue."""
    waiting = set()
    for queued in get_queue(queue_name).get_job_ids():
        head, _, rest = queued.partition("-")
        number = rest.partition("-")[0]
        if head == prefix and number.isdigit():
            waiting.add(int(number))
    return waiting


def enqueue_on_commit(queue_name: str, func: str, *args, job_id: str | None = None) -> None:
    """Enqueue `func(*args)` once the current transaction commits (at once
    outside one). A Redis failure then is logged, never raised: the change is
    committed, and raising would turn it into an error page for a request that
    did happen. A deployment's job is enqueued again by the waiting-state
    sweeper; a notification stays pending."""

    def send() -> None:
        try:
            queue = get_queue(queue_name, commit_mode="auto")
            queue.enqueue(func, *args, job_id=job_id)
        except RedisError as exc:
            log.warning(
                "could not enqueue %s%r on %s after commit (%s)",
                func, args, queue_name, type(exc).__name__,
            )  # fmt: skip

    transaction.on_commit(send)
