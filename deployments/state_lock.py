"""Carrying out an admin's force-unlock of a Terraform state lock that a dead
run left behind (requested through Deployment.request_force_unlock, run by
the force_unlock_state job on the high queue)."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction

from deployments.choices import Stream
from deployments.engine import step_context, step_workdir
from deployments.logs import LogWriter
from deployments.models import Deployment, StepRun, lock_environment
from deployments.runners.terraform import StateUnlock
from portal.cloud.errors import CloudError
from portal.cloud.masking import Masker
from portal.core import audit
from portal.core.roles import PolicyError

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
            step = deployment.terraform_step_of(step_run)
            workdir = step_workdir(deployment.pk, step_run.order)
            ctx = step_context(deployment, step.config, workdir=workdir, log=writer)
            unlock = StateUnlock(ctx)
            with transaction.atomic():
                lock_environment(deployment.environment_id)  # held until the transaction ends
                deployment.held_state_lock(StepRun.objects.get(pk=step_run.pk))
                deployment.refuse_while_running()
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
