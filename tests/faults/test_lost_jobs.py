"""The waiting-state sweeper (jobs.wake_waiting_deployments) and the plan's
claim: a deployment waiting for a job whose job was lost gets one again, a
deployment whose job still waits in its queue does not get a second, and two
plan jobs never plan one request at once. Real Redis and PostgreSQL; the jobs
are only enqueued here, not run (tests/faults/test_redis_down_on_request.py
runs them in real workers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments import jobs
from deployments.choices import Status
from deployments.models import Deployment, StepRun
from environments.models import Step
from tests.conftest import env

pytestmark = pytest.mark.django_db(transaction=True)


def queued_jobs(queues) -> list[tuple[str, str, int]]:
    """(queue, function, deployment id) of every job waiting, oldest first."""
    return [
        (queue.name, job.func_name.rpartition(".")[2], job.args[0])
        for queue in queues
        for job in queue.get_jobs()
    ]


@pytest.fixture
def planned_env(catalog):
    """dev with a Terraform step: a request starts in `planning`."""
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="Terraform", kind="terraform",
                        config={"path": "infra/terraform/fraud-detector"})  # fmt: skip
    return dev


def test_it_leaves_a_plan_whose_job_still_waits_and_enqueues_one_that_was_lost(
    planned_env, release, users, queues
):
    deployment = Deployment.request(release, planned_env, users["alice"], "hotfix")
    assert queued_jobs(queues) == [("default", "plan_deployment", deployment.pk)]

    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 0}
    assert queued_jobs(queues) == [("default", "plan_deployment", deployment.pk)]

    queues[1].empty()  # the job is lost (Redis restarted empty, say)
    assert jobs.wake_waiting_deployments() == {"plans": 1, "runs": 0}
    assert queued_jobs(queues) == [("default", "plan_deployment", deployment.pk)]
    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 0}  # not twice


def test_it_leaves_a_plan_a_live_worker_holds_and_takes_over_a_dead_ones(
    planned_env, release, users, queues
):
    deployment = Deployment.request(release, planned_env, users["alice"], "hotfix")
    assert deployment.claim_planning("worker-a:1", jobs.STALE_AFTER)
    queues[1].empty()  # the job was taken by that worker

    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 0}

    # Its heartbeat stopped (the worker died): the claim goes stale.
    stale = timezone.now() - jobs.STALE_AFTER - timedelta(seconds=1)
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=stale)
    assert jobs.wake_waiting_deployments() == {"plans": 1, "runs": 0}
    assert queued_jobs(queues) == [("default", "plan_deployment", deployment.pk)]


def test_a_second_plan_job_does_nothing_while_the_first_holds_the_claim(
    planned_env, release, users, queues
):
    deployment = Deployment.request(release, planned_env, users["alice"], "hotfix")
    assert deployment.claim_planning("worker-a:1", jobs.STALE_AFTER)

    assert jobs.plan_deployment(deployment.pk) == "being planned by another worker"
    assert not StepRun.objects.filter(deployment=deployment).exists()
    deployment.refresh_from_db()
    assert (deployment.status, deployment.worker_name) == (Status.PLANNING, "worker-a:1")


def test_a_planner_whose_claim_was_taken_over_is_told_to_stop(planned_env, release, users):
    deployment = Deployment.request(release, planned_env, users["alice"], "hotfix")
    first = Deployment.objects.get(pk=deployment.pk)
    assert first.claim_planning("worker-a:1", jobs.STALE_AFTER)
    assert first.heartbeat() is False  # still its own: go on

    stale = timezone.now() - jobs.STALE_AFTER - timedelta(seconds=1)
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=stale)
    second = Deployment.objects.get(pk=deployment.pk)
    assert second.claim_planning("worker-b:2", jobs.STALE_AFTER)

    assert first.heartbeat() is True  # no longer its own: stop
    assert first.record_plan("f" * 64, {}, planner="worker-a:1") is False
    assert first.fail_planning("too late", planner="worker-a:1") is False
    assert Deployment.objects.get(pk=deployment.pk).status == Status.PLANNING


def test_it_enqueues_a_queued_run_whose_job_was_lost_once(catalog, release, users, queues):
    dev = env(catalog, "dev")  # no approvals, no Terraform: queued at once
    Step.objects.create(environment=dev, order=1, name="Smoke", kind="command",
                        config={"argv": ["true"]})  # fmt: skip
    deployment = Deployment.request(release, dev, users["alice"], "hotfix")
    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 0}

    queues[1].empty()
    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 1}
    assert jobs.wake_waiting_deployments() == {"plans": 0, "runs": 0}
    assert queued_jobs(queues) == [("default", "run_deployment", deployment.pk)]
