"""Cancelling a queued deployment on the model: the requester withdraws it
before a worker takes it, and the run job already enqueued for it does nothing."""

from __future__ import annotations

import pytest

from deployments import jobs
from deployments.choices import Status
from deployments.models import Deployment, LogLine
from environments.models import Step
from tests.conftest import env, work
from tests.environments.ui import last_event

# Committed for real: the request's on-commit hook enqueues its run job on Redis.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(catalog, release, users, queues) -> Deployment:
    dev = env(catalog, "dev")  # no approvals: queued, and its run job enqueued, at once
    Step.objects.create(
        environment=dev, order=1, name="Migrate", kind="command",
        config={"argv": ["sh", "-c", "echo migrated"]},
    )  # fmt: skip
    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
    assert deployment.status == Status.QUEUED
    return deployment


def run_jobs(queue, deployment: Deployment) -> list:
    wanted = ("deployments.jobs.run_deployment", (deployment.pk,))
    return [job for job in queue.get_jobs() if (job.func_name, tuple(job.args)) == wanted]


def test_the_requester_cancels_a_queued_deployment_and_it_never_starts(queued, users, queues):
    [job] = run_jobs(queues[1], queued)  # what a worker would pick up next

    queued.cancel(users["alice"], "superseded by 1.5.0")

    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED
    assert queued.error == "superseded by 1.5.0"
    assert queued.finished_at is not None
    event = last_event("deployment.cancelled")
    assert event.target_id == str(queued.pk)
    assert event.actor_id == users["alice"].pk
    assert event.before == {"status": Status.QUEUED}
    assert event.after["status"] == Status.CANCELLED

    # Neither a worker's start nor the job enqueued at request time runs it.
    assert not queued.start("late-worker:1")
    work(queues)
    job.refresh()
    assert job.return_value() == "not queued"
    assert jobs.run_deployment(queued.pk) == "not queued"
    queued.refresh_from_db()
    assert (queued.status, queued.started_at, queued.worker_name) == (Status.CANCELLED, None, "")
    assert not queued.step_runs.exists()
    assert not LogLine.objects.filter(deployment=queued).exists()
    assert last_event("deployment.started") is None
