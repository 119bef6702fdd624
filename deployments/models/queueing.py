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
from django.db import transaction
from redis.exceptions import RedisError

from portal.core.roles import Unavailable

log = logging.getLogger(__name__)

QUEUE_DOWN = (
    "The job queue (Redis) is not answering, so no worker could take this; nothing was "
    "requested. Try again in a minute; if it persists, the portal's Redis is down."
)


def check_queue(queue_name: str) -> None:
    """Refuse up front (Unavailable, 503) when the queue's Redis does not
    answer. A refused connection fails in a few ms; a silent host within the
    connection's socket timeout."""
    try:
        django_rq.get_connection(queue_name).ping()
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
    for queued in django_rq.get_queue(queue_name).get_job_ids():
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
            queue = django_rq.get_queue(queue_name, commit_mode="auto")
            queue.enqueue(func, *args, job_id=job_id)
        except RedisError as exc:
            log.warning(
                "could not enqueue %s%r on %s after commit (%s)",
                func, args, queue_name, type(exc).__name__,
            )  # fmt: skip

    transaction.on_commit(send)
