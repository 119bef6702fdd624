"""RQ jobs of the deployments app. Each takes a primary key, loads its row,
and is safe to run twice: it acts only if the row is still in the state the
job is meant for.

- plan_deployment: the Terraform steps' `plan` → the plan hash approvals bind to.
- run_deployment: take the environment (Deployment.start), run the steps in
  order, stream their output, finish; a failed bake starts an automatic rollback.
- force_unlock_state: an admin's force-unlock of a Terraform state lock (high queue).
- fail_stalled_deployments / wake_waiting_deployments: housekeeping (cron).

A job survives a restart of the database under it: the heartbeat and the log
writer's storer retry, and the run's own bookkeeping (step rows, the final
state) waits for the database to come back (DATABASE_WAIT) rather than fail
the run on a dropped connection.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.db.models import Q
from django.utils import timezone

from deployments import rollback, state_lock
from deployments.choices import Kind, NotificationEvent, Status, StepStatus, Stream
from deployments.engine import step_context, step_workdir
from deployments.logs import LogWriter
from deployments.models import Deployment, StepRun, announce_environment, wake_next_queued
from deployments.models.deployment import PLAN_JOB_PREFIX, RUN_JOB_PREFIX, WINDOW_STATUSES
from deployments.models.drift import resolve_services
from deployments.models.policy import evaluate_plans, policy_context
from deployments.models.queueing import waiting_deployments
from deployments.runners import StepFailed, get_runner
from deployments.viewers import broadcast_status
from environments import plan_policy, pricing
from environments.choices import StepKind
from environments.live import environment_changed
from portal.cloud.errors import Cancelled, CloudError
from portal.cloud.masking import Masker
from portal.cloud.process import Deadline

log = logging.getLogger(__name__)

NO_AUTOMATIC_ROLLBACK = (
    "No alarm fired, so no automatic rollback; roll back from the environment page "
    "if the release is unhealthy."
)
HEARTBEAT_SECONDS = 2
# A run whose heartbeat is older than this is abandoned (its worker died);
# so is a plan's claim, which another worker may then take over.
STALE_AFTER = timedelta(seconds=20)
# How long a job waits for the database to come back (a restart, a failover)
# before giving up on writing a step's or the run's state.
DATABASE_WAIT = 120
DATABASE_RETRY_SECONDS = 1.0
# On a rollback these kinds bring the target release's own known state back
# through their runner's `rollback` (the task definitions recorded when it last
# succeeded here, its images, a command's rollback_argv); Terraform plans and
# applies the target's variables as a deploy would, an http_check checks...
OWN_ROLLBACK = {StepKind.ECS_ROLLING, StepKind.ECS_BLUE_GREEN, StepKind.K8S_ROLLING,
                StepKind.COMMAND}  # fmt: skip
# ...and these are not repeated: a snapshot or a bake would only delay
# restoring service.
SKIPPED_ON_ROLLBACK = {StepKind.RDS_SNAPSHOT, StepKind.BAKE}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


Result = TypeVar("Result")


def with_database(action: Callable[[], Result], what: str) -> Result:
    """Run `action` (idempotent bookkeeping: a conditional UPDATE, an
    update_or_create), reconnecting and trying again while the database is
    unreachable, for DATABASE_WAIT seconds at most. A dropped connection is
    closed first: Django would otherwise keep failing on it."""
    deadline = Deadline(DATABASE_WAIT)
    while True:
        try:
            return action()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or deadline.passed:
                raise
            log.warning("%s: database unreachable (%s); retrying", what, exc)
            connection.close()
            time.sleep(DATABASE_RETRY_SECONDS)


def combined_plan_hash(step_hashes: list[tuple[int, str]]) -> str:
    """One Terraform step: its plan file's SHA-256. Several: a hash over them all."""
    if len(step_hashes) == 1:
        return step_hashes[0][1]
    text = "\n".join(f"{order}:{digest}" for order, digest in sorted(step_hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def _load(deployment_id: int):
    return (
        Deployment.objects.select_related("environment", "release__application")
        .filter(pk=deployment_id)
        .first()
    )


def _step_run(deployment, step, phase: str):
    run, _ = with_database(lambda: _start_step_row(deployment, step, phase), "starting a step")
    run.deployment = deployment  # found rather than created, it would fetch it again at its end
    environment_changed(deployment.environment_id, "step")  # the dashboard's step progress
    return run


def _start_step_row(deployment, step, phase: str):
    return StepRun.objects.update_or_create(
        deployment=deployment, phase=phase, order=step.order,
        defaults={"name": step.name, "kind": step.kind, "status": StepStatus.RUNNING,
                  "started_at": timezone.now(), "finished_at": None, "error": ""},
    )  # fmt: skip


def failure_outputs(exc: CloudError, masker: Masker) -> dict:
    """What a failed step keeps: its partial outputs, and a held Terraform
    state lock's details (ID, holder, since) for the admins' force-unlock,
    masked like the log (they come from the tool's stderr)."""
    outputs = dict(exc.outputs)
    if exc.details.get("lock"):
        outputs["lock"] = {
            key: masker.mask(value) if isinstance(value, str) else value
            for key, value in exc.details["lock"].items()
        }
    return outputs


def _end_step(run, status: str, outputs: dict | None = None, error: str = "") -> None:
    now = timezone.now()
    with_database(
        lambda: StepRun.objects.filter(pk=run.pk).update(
            status=status, outputs=outputs or {}, error=error, finished_at=now
        ),
        "ending a step",
    )
    environment_changed(run.deployment.environment_id, "step")


def plan_deployment(deployment_id: int) -> str:
    """Plan every Terraform step; record the plan hash or fail the request.

    The plan is claimed first (Deployment.claim_planning) and the claim beats
    like a run's heartbeat, so a plan job delivered twice, or enqueued again
    by the housekeeping while the first still works, does not plan it twice
    at once; a claim left by a dead worker goes stale and is taken over."""
    deployment = _load(deployment_id)
    if deployment is None or deployment.status != Status.PLANNING:
        return "nothing to plan"
    planner = worker_name()
    if not deployment.claim_planning(planner, STALE_AFTER):
        return "being planned by another worker"
    stopped = threading.Event()
    heartbeat = Heartbeat(deployment, stopped)
    heartbeat.start()
    try:
        return _plan(deployment, planner, stopped)
    except DatabaseError:
        # Not the request's fault: its claim goes stale and the housekeeping
        # (wake_waiting_deployments) has it planned again.
        log.warning("planning deployment %s lost the database", deployment.pk, exc_info=True)
        return "database unreachable; to be planned again"
    except Exception:  # a bug, not the user's doing: fail the request with an id to quote
        error_id = uuid.uuid4().hex[:12]
        log.exception("planning deployment %s crashed (error id %s)", deployment.pk, error_id)
        error = f"Planning failed: internal error (id {error_id}); see the worker log."
        if with_database(lambda: deployment.fail_planning(error, planner), "failing a plan"):
            broadcast_status(deployment.pk, Status.FAILED)
        return "plan crashed"
    finally:
        heartbeat.stop()
        close_old_connections()


def _plan(deployment, planner: str, stopped: threading.Event) -> str:
    environment = deployment.environment
    masker = Masker(environment.secret_variables)
    writer = LogWriter(deployment.pk, masker)
    hashes, summary, costs, documents = [], {"resource_changes": 0}, [], []
    try:
        for step in environment.steps.filter(kind=StepKind.TERRAFORM).order_by("order"):
            run = _step_run(deployment, step, "plan")
            writer.set_step(run.pk, f"plan: {step.name}")
            ctx = step_context(
                deployment, step.config, workdir=step_workdir(deployment.pk, step.order),
                log=writer, cancelled=stopped,
            )  # fmt: skip
            try:
                result = get_runner(step.kind).plan(ctx)
            except CloudError as exc:
                message = masker.mask(exc.message)
                _end_step(run, StepStatus.FAILED, failure_outputs(exc, masker), message)
                raise StepFailed(message) from None
            documents.append((step.name, ctx.plan_document))
            _end_step(run, StepStatus.SUCCEEDED, result)
            hashes.append((step.order, result["plan_sha256"]))
            summary["resource_changes"] += len(result.get("resource_changes", []))
            costs.append(result.get("cost"))
        cost = pricing.combine(costs)
        verdict = _judge(deployment, documents, cost, writer, masker)
    except CloudError as exc:
        writer.write(f"Planning failed: {exc.message}", Stream.SYSTEM)
        writer.close()
        if not deployment.fail_planning(f"Planning failed: {exc.message}", planner):
            return "no longer this worker's plan"
        broadcast_status(deployment.pk, Status.FAILED)
        return "plan failed"
    finally:
        writer.close()  # again is harmless; a crash must not leave its threads behind
    if not deployment.record_plan(
        combined_plan_hash(hashes), summary, cost, planner=planner, policy=verdict
    ):
        return "no longer this worker's plan"
    broadcast_status(deployment.pk, deployment.status)
    return deployment.status


def _judge(deployment, documents: list, cost: dict | None, writer, masker: Masker) -> dict | None:
    """The policies' verdict on the plans (None without a Terraform step), logged
    for the people watching. Policy files that cannot be evaluated fail the plan
    with a message for whoever maintains them, not an internal error."""
    if not documents:
        return None
    try:
        verdict = evaluate_plans(documents, policy_context(deployment, cost))
    except (plan_policy.PlanDocumentError, plan_policy.PolicyBundleError) as exc:
        log.error("policies could not judge deployment %s: %s", deployment.pk, exc)
        raise StepFailed(f"The policies could not be evaluated: {masker.mask(str(exc))}") from None
    for violation in verdict["violations"]:
        violation["message"] = masker.mask(violation["message"])
        where = f" at {violation['address']}" if violation["address"] else ""
        writer.write(
            f"Policy {violation['policy']} ({violation['level']}){where}: {violation['message']}",
            Stream.SYSTEM,
        )
    for wanted in verdict["extra_approvals"]:
        writer.write(f"Policy {wanted['policy']}: {wanted['message']}", Stream.SYSTEM)
    writer.write(f"Policy outcome: {verdict['outcome']}.", Stream.SYSTEM)
    return verdict


class Heartbeat(threading.Thread):
    """Beats while the deployment is planned or runs, and tells the steps to
    stop on a cancel request or when the row is no longer this job's
    (Deployment.heartbeat). A beat the database misses (a restart) is
    retried at the next one on a new connection."""

    def __init__(self, deployment, cancelled: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{deployment.pk}", daemon=True)
        self.deployment, self.cancelled = deployment, cancelled
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_SECONDS):
                try:
                    stop = self.deployment.heartbeat()
                except DatabaseError as exc:
                    log.warning("heartbeat of deployment %s missed: %s", self.deployment.pk, exc)
                    connection.close()
                    continue
                if stop:
                    self.cancelled.set()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=HEARTBEAT_SECONDS * 2)


def _previous_outputs(deployment, order: int) -> dict | None:
    return (
        StepRun.objects.filter(
            deployment__environment_id=deployment.environment_id,
            deployment__status=Status.SUCCEEDED, phase="deploy", order=order,
            status=StepStatus.SUCCEEDED,
        )
        .exclude(deployment=deployment)
        .order_by("-deployment__finished_at")
        .values_list("outputs", flat=True)
        .first()
    )  # fmt: skip


def _known_outputs(deployment, order: int) -> dict | None:
    """What this step recorded when the deployment's release last succeeded in
    the environment (None when it never did, or history Gantry did not make)."""
    return (
        StepRun.objects.filter(
            deployment__environment_id=deployment.environment_id,
            deployment__release_id=deployment.release_id,
            deployment__status=Status.SUCCEEDED, phase="deploy", order=order,
            status=StepStatus.SUCCEEDED,
        )
        .exclude(deployment=deployment)
        .order_by("-deployment__finished_at", "-deployment_id")
        .values_list("outputs", flat=True)
        .first()
    )  # fmt: skip


def _plan_of(deployment, order: int) -> dict | None:
    return (
        StepRun.objects.filter(deployment=deployment, phase="plan", order=order)
        .values_list("outputs", flat=True)
        .first()
    )


def _run_step(deployment, step, writer: LogWriter, cancelled: threading.Event) -> dict:
    """Run one step, or on a rollback bring the target release's state back; returns
    its outputs."""
    runner = get_runner(step.kind)
    workdir = step_workdir(deployment.pk, step.order)
    # A `command` step runs in it (its cwd): it must exist before the step starts.
    workdir.mkdir(parents=True, exist_ok=True)
    is_rollback = deployment.kind == Kind.ROLLBACK
    if is_rollback and step.kind in SKIPPED_ON_ROLLBACK:
        writer.write(f"{step.kind} is not repeated on a rollback; skipped.", Stream.SYSTEM)
        return {"skipped": True}
    known = _known_outputs(deployment, step.order) if is_rollback else None
    ctx = step_context(
        deployment, step.config, workdir=workdir, log=writer,
        cancelled=cancelled, plan=_plan_of(deployment, step.order),
        previous_outputs=known if is_rollback else _previous_outputs(deployment, step.order),
    )  # fmt: skip
    if is_rollback and step.kind in OWN_ROLLBACK:
        if known is None:
            writer.write(
                f"No state of {deployment.release.version} recorded here for this step; "
                "deploying its images.",
                Stream.SYSTEM,
            )
        return runner.rollback(ctx)
    return runner.run(ctx)


def _check_plan_binding(deployment) -> None:
    """Apply only what was approved: the recorded plans must hash to plan_sha256."""
    plans = StepRun.objects.filter(deployment=deployment, phase="plan").values_list(
        "order", "outputs"
    )
    hashes = [(order, outputs.get("plan_sha256", "")) for order, outputs in plans]
    if hashes and combined_plan_hash(hashes) != deployment.plan_sha256:
        raise StepFailed("The recorded plans do not match the approved plan hash; replan.")


def superseded_plans(deployment) -> str:
    """Why the deployment's saved plans are stale, or "": another run of this
    environment started applying the same Terraform step after they were made
    (Terraform would refuse them: "Saved plan is stale"). Read from our own
    step runs, so it costs no Terraform process."""
    plans = StepRun.objects.filter(
        deployment=deployment, phase="plan", kind=StepKind.TERRAFORM, finished_at__isnull=False
    ).values_list("order", "finished_at")
    for order, planned_at in plans:
        applied = (
            StepRun.objects.filter(
                deployment__environment_id=deployment.environment_id, phase="deploy",
                kind=StepKind.TERRAFORM, order=order, started_at__gt=planned_at,
            )
            .exclude(deployment=deployment)
            .order_by("started_at")
            .values_list("deployment_id", "name")
            .first()
        )  # fmt: skip
        if applied:
            return f"#{applied[0]} applied step {order} ({applied[1]}) after this plan was made"
    return ""


def run_deployment(deployment_id: int) -> str:
    """Carry out a queued deployment. A second call for the same row does nothing."""
    deployment = _load(deployment_id)
    if deployment is None or deployment.status != Status.QUEUED:
        return "not queued"
    if not deployment.start(worker_name()):
        return "environment busy; stays queued"
    environment = deployment.environment
    masker = Masker(environment.secret_variables)
    # The log's first line before anything else: it tells watchers at once
    # that a worker took the deployment.
    writer = LogWriter(deployment.pk, masker)
    writer.write(f"Started by {deployment.worker_name}.", Stream.SYSTEM)
    broadcast_status(deployment.pk, Status.RUNNING)
    stale = superseded_plans(deployment)
    if stale:  # before any step: nothing has run, the environment is freed again
        writer.write(
            f"The saved plan is stale: {stale}. Planning again; approvals given for "
            "the old plan no longer count.",
            Stream.SYSTEM,
        )
        writer.close()
        deployment.replan(f"The saved plan is stale: {stale}.")
        broadcast_status(deployment.pk, deployment.status)
        close_old_connections()
        return "stale plan; planning again"
    cancelled = threading.Event()
    heartbeat = Heartbeat(deployment, cancelled)
    heartbeat.start()
    status, error, alarm_fired, run = Status.SUCCEEDED, "", False, None
    try:
        _check_plan_binding(deployment)
        for step in environment.steps.order_by("order"):
            if cancelled.is_set():
                raise Cancelled("The deployment was cancelled.")
            run = _step_run(deployment, step, "deploy")
            writer.set_step(run.pk, step.name)
            writer.write(f"── {step.order}. {step.name} ({step.kind})", Stream.SYSTEM)
            try:
                outputs = _run_step(deployment, step, writer, cancelled)
            except Cancelled:
                _end_step(run, StepStatus.CANCELLED, error="Cancelled.")
                raise
            except CloudError as exc:
                message = masker.mask(exc.message)
                _end_step(run, StepStatus.FAILED, failure_outputs(exc, masker), message)
                # A fired alarm rolls back at once; a bake that could not read
                # its sources only fails, and people decide (the page offers it).
                alarm_fired = step.kind == StepKind.BAKE and "alarm" in exc.details
                if step.kind == StepKind.BAKE and not alarm_fired:
                    writer.write(NO_AUTOMATIC_ROLLBACK, Stream.SYSTEM)
                raise StepFailed(f"{step.name}: {message}") from None
            _end_step(run, StepStatus.SUCCEEDED, outputs)
    except Cancelled:
        status, error = Status.CANCELLED, "Cancelled while running."
    except CloudError as exc:
        status, error = Status.FAILED, exc.message
    except Exception:  # a bug, not the user's doing: log it with an id they can quote
        error_id = uuid.uuid4().hex[:12]
        log.exception("deployment %s crashed (error id %s)", deployment.pk, error_id)
        status, error = Status.FAILED, f"Internal error (id {error_id}); see the worker log."
        if run is not None:
            _end_step(run, StepStatus.FAILED, error=error)
    finally:
        heartbeat.stop()
        writer.write(f"Deployment {status}." + (f" {error}" if error else ""), Stream.SYSTEM)
        writer.close()
    with_database(lambda: deployment.finish(status, error), "finishing the run")
    broadcast_status(deployment.pk, status)
    if status == Status.SUCCEEDED:  # it set every service's images: no runtime drift left
        with_database(lambda: resolve_services(environment.pk), "resolving drift")
    if deployment.emergency:
        with_database(lambda: _ask_for_review(deployment), "asking for the emergency review")
    if alarm_fired and deployment.kind == Kind.DEPLOY:
        rollback.request_rollback(
            environment, reason=f"Automatic rollback: #{deployment.pk} failed its bake ({error})",
            undo=deployment,
        )  # fmt: skip
    close_old_connections()
    return status


def _ask_for_review(deployment) -> None:
    deployment.refresh_from_db()
    due = deployment.review_due_by
    announce_environment(
        deployment.environment, NotificationEvent.EMERGENCY_REVIEW,
        f"Review emergency change #{deployment.pk} ({deployment.release.version} → "
        f"{deployment.environment.slug})",
        f"It went ahead through a break-glass or policy override and ended {deployment.status}. "
        f"An approver or admin who took no part reviews it by {due:%Y-%m-%d %H:%M %Z}: "
        f"{settings.PORTAL_URL.rstrip('/')}/deployments/{deployment.pk}/",
    )  # fmt: skip


def force_unlock_state(step_run_id: int) -> str:
    """Carry out the force-unlock an admin requested for a step run
    (state_lock.request_force_unlock). The run clears the request: a second
    call finds none and does nothing."""
    step_run = (
        StepRun.objects.select_related("deployment__environment", "unlock_requested_by")
        .filter(pk=step_run_id)
        .first()
    )
    if step_run is None or step_run.unlock_requested_at is None:
        return "no force-unlock requested"
    return state_lock.force_unlock(step_run.deployment, step_run)


def fail_stalled_deployments() -> list[int]:
    """Housekeeping: a run whose worker died (kill -9) is failed, freeing the environment."""
    failed = _fail_stalled(STALE_AFTER)
    for pk in failed:
        broadcast_status(pk, Status.FAILED)
    return failed


def _fail_stalled(stale_after: timedelta) -> list[int]:
    """Fail running deployments whose job stopped beating (its worker died)."""
    cutoff = timezone.now() - stale_after
    failed = []
    for deployment in Deployment.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff):
        last = deployment.heartbeat_at
        reason = (
            f"The worker {deployment.worker_name or '?'} stopped responding "
            f"(last heartbeat {last:%Y-%m-%d %H:%M:%S %Z}); the run was abandoned."
        )
        if deployment.finish(Status.FAILED, reason):
            failed.append(deployment.pk)
    return failed


def wake_waiting_deployments() -> dict[str, int]:
    """Housekeeping: enqueue again every deployment waiting for a job that no
    queue holds (Redis was down when it was committed, restarted empty, or a
    worker died with the job), so no row waits forever:

    - planning, with no live claim (no plan job works on it): its plan job;
    - queued, in an environment nothing runs in: the oldest one's run job.

    A deployment whose job still waits in its queue is left alone (read from
    the job ids, deployments/models/queueing.py); a duplicate that slips
    through does nothing (the plan's claim, Deployment.start's conditional
    UPDATE)."""
    waiting = {
        prefix: set().union(*(waiting_deployments(queue, prefix) for queue in ("high", "default")))
        for prefix in (PLAN_JOB_PREFIX, RUN_JOB_PREFIX)
    }
    cutoff = timezone.now() - STALE_AFTER
    unplanned = (
        Deployment.objects.filter(status=Status.PLANNING)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
        .exclude(pk__in=waiting[PLAN_JOB_PREFIX])
        .select_related("environment")
    )
    planned = 0
    for deployment in unplanned:
        deployment.dispatch()
        planned += 1
    busy = Deployment.objects.filter(status=Status.RUNNING).values("environment_id")
    environments = (
        Deployment.objects.filter(status=Status.QUEUED)
        .exclude(environment_id__in=busy)
        .values_list("environment_id", flat=True)
        .distinct()
    )
    started = 0
    for environment_id in environments:
        if wake_next_queued(environment_id, skip=waiting[RUN_JOB_PREFIX]):
            started += 1
    if planned or started:
        log.info("re-enqueued %d plan job(s) and %d run job(s)", planned, started)
    return {"plans": planned, "runs": started}


def expire_stale_requests() -> int:
    """Housekeeping (low queue, every minute): expire requests whose approval
    window has passed, so an old approval can never release a stale change."""
    expired = 0
    candidates = Deployment.objects.filter(status=Status.AWAITING_APPROVAL).select_related(
        "environment"
    )
    for deployment in candidates.iterator():
        expired += deployment.expire()  # locks only a request past its window
    closed = Deployment.objects.filter(status__in=WINDOW_STATUSES, not_after__lt=timezone.now())
    for deployment in closed.select_related("environment").iterator():
        expired += deployment.expire_window()
    if expired:
        log.info("expired %d deployment request(s)", expired)
    return expired
