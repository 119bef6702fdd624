"""An admin's force-unlock of a Terraform state lock that a dead run left
behind: the request (checked, marked on the step run, audited, the job
enqueued by name) and its carrying out by the force_unlock_state job on the
high queue."""

from __future__ import annotations

import logging
import uuid

from django.db import OperationalError, transaction
from django.utils import timezone

from deployments.choices import Status, Stream
from deployments.engine import step_context, step_workdir
from deployments.logs import LogWriter
from deployments.models import Deployment, StepRun, lock_environment
from deployments.models.queueing import get_queue
from deployments.runners.terraform import StateUnlock
from environments.choices import StepKind
from portal.cloud.errors import CloudError
from portal.cloud.masking import Masker
from portal.core import audit
from portal.core.choices import Role
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

FORCE_UNLOCK_JOB = "deployments.jobs.force_unlock_state"
# PostgreSQL's SQLSTATE for a NOWAIT lock that another transaction holds.
LOCK_NOT_AVAILABLE = "55P03"

log = logging.getLogger(__name__)


def force_unlock(deployment: Deployment, step_run: StepRun) -> str:
    """Carry out the force-unlock an admin requested for `step_run` (the
    force_unlock_state job). `terraform init` runs outside any transaction;
    then the checks are made again under the environment row lock, held
    through `terraform force-unlock` and the audit event, so no deployment
    starts in between. Written to the log and audited either way; the request's
    mark is cleared either way."""
    user, reason = step_run.unlock_requested_by, step_run.unlock_reason
    requested_at = step_run.unlock_requested_at
    environment = deployment.environment
    masker = Masker(environment.secret_variables)
    recorded = (step_run.outputs or {}).get("lock") or {}
    lock = {key: value for key, value in recorded.items() if key != "unlock_error"}
    lock_id = lock.get("id", "")
    detail = {"step": step_run.name, "lock_id": lock_id, "lock": lock, "reason": reason}
    name = user.get_username() if user is not None else "?"

    writer = LogWriter(deployment.pk, masker)
    writer.set_step(step_run.pk, step_run.name)
    writer.write(
        f"{name} force-unlocks Terraform state lock {lock_id} "
        f"(held by {lock.get('who', '?')} since {lock.get('created', '?')}): {reason}",
        Stream.SYSTEM,
    )
    try:
        error = ""
        try:
            step = terraform_step_of(deployment, step_run)
            workdir = step_workdir(deployment.pk, step_run.order)
            ctx = step_context(deployment, step.config, workdir=workdir, log=writer)
            unlock = StateUnlock(ctx)
            with transaction.atomic():
                lock_environment(deployment.environment_id)  # held until the transaction ends
                held_state_lock(deployment, StepRun.objects.get(pk=step_run.pk))
                refuse_while_running(deployment)
                unlock.release(lock_id)
                StepRun.objects.filter(pk=step_run.pk).update(
                    outputs={**step_run.outputs, "lock": {**lock, "released_by": name}},
                    unlock_requested_by=None, unlock_requested_at=None, unlock_reason="",
                )  # fmt: skip
                audit.record("terraform.force_unlocked", deployment, actor=user, after=detail)
        except (PolicyError, CloudError) as exc:
            error = masker.mask(exc.message)
        except Exception:  # a bug, not the admin's doing: logged with an id to quote
            error_id = uuid.uuid4().hex[:12]
            log.exception("force-unlock of step run %s failed (error id %s)",
                          step_run.pk, error_id)  # fmt: skip
            error = f"Internal error (id {error_id}); see the worker log."
        if not error:
            writer.write(f"State lock {lock_id} released.", Stream.SYSTEM)
            return "unlocked"
        writer.write(f"Force-unlock failed: {error}", Stream.SYSTEM)
        with transaction.atomic():
            # Only this request's mark: a later request may have replaced a lost one.
            StepRun.objects.filter(pk=step_run.pk, unlock_requested_at=requested_at).update(
                outputs={**step_run.outputs, "lock": {**lock, "unlock_error": error}},
                unlock_requested_by=None, unlock_requested_at=None, unlock_reason="",
            )  # fmt: skip
            audit.record("terraform.force_unlock_failed", deployment, actor=user,
                         after={**detail, "error": error})  # fmt: skip
        return "failed"
    finally:
        writer.close()  # its threads must not outlive the job


def request_force_unlock(deployment: Deployment, step_run: StepRun, user, reason: str) -> None:
    """An admin asks to release the Terraform state lock a dead run left
    behind (the lock the failed `step_run` recorded). Checked, marked on
    the step run and audited here; the force_unlock_state job on the high
    queue runs Terraform, whose `init` can take minutes. Refused while any
    deployment runs in the environment (its lock would be live) and while
    an earlier request for the step is in progress."""
    environment = deployment.environment
    if not has_role(user, environment, Role.ADMIN):
        raise Forbidden(f"Only admins of {environment} may force-unlock its Terraform state.")
    reason = (reason or "").strip()
    if not reason:
        raise PolicyError("Say why the lock is dead: the reason is kept in the audit trail.")
    try:
        with transaction.atomic():
            # NOWAIT: while a force-unlock job holds the environment, say so
            # at once rather than keep a web worker waiting on Terraform.
            lock_environment(deployment.environment_id, nowait=True)
            step_run = StepRun.objects.select_related("unlock_requested_by").get(pk=step_run.pk)
            lock = held_state_lock(deployment, step_run)
            if step_run.unlock_in_progress:
                since = timezone.localtime(step_run.unlock_requested_at)
                raise Conflict(
                    f"{step_run.unlock_requested_by} already asked to force-unlock lock "
                    f"{lock['id']} at {since:%H:%M:%S %Z}; it is in progress and its "
                    "result will appear on this page."
                )
            terraform_step_of(deployment, step_run)
            refuse_while_running(deployment)
            StepRun.objects.filter(pk=step_run.pk).update(
                unlock_requested_by=user, unlock_requested_at=timezone.now(),
                unlock_reason=reason,
            )  # fmt: skip
            audit.record(
                "terraform.force_unlock_requested",
                deployment,
                actor=user,
                after={"step": step_run.name, "lock_id": lock["id"], "lock": lock,
                       "reason": reason},
            )  # fmt: skip
            get_queue("high").enqueue(FORCE_UNLOCK_JOB, step_run.pk)
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise Conflict(
            f"{environment} is busy right now (a force-unlock is running or a deployment "
            "is starting); try again in a minute."
        ) from None


def terraform_step_of(deployment: Deployment, step_run: StepRun):
    """The environment's Terraform step `step_run` ran (the config to unlock with)."""
    step = deployment.environment.steps.filter(
        order=step_run.order, kind=StepKind.TERRAFORM
    ).first()
    if step is None:
        raise PolicyError("The environment no longer has this Terraform step.")
    return step


def held_state_lock(deployment: Deployment, step_run: StepRun) -> dict:
    """The Terraform state lock `step_run` failed on, if nobody released it yet."""
    lock = (step_run.outputs or {}).get("lock") or {}
    lock_id = lock.get("id", "")
    if (
        step_run.deployment_id != deployment.pk
        or step_run.kind != StepKind.TERRAFORM
        or not lock_id
    ):
        raise PolicyError("This step did not fail on a Terraform state lock.")
    if lock.get("released_by"):
        raise PolicyError(f"Lock {lock_id} was already released by {lock['released_by']}.")
    return lock


def refuse_while_running(deployment: Deployment) -> None:
    """The caller holds the environment row lock, which Deployment.start takes too."""
    if Deployment.objects.filter(
        environment_id=deployment.environment_id, status=Status.RUNNING
    ).exists():
        raise PolicyError(
            f"A deployment is running in {deployment.environment}: the lock may be its own. "
            "Wait for it or cancel it first."
        )
