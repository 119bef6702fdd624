"""Rollback: which release a rollback brings back, and asking for it.

A rollback deploys a known-good release: one that succeeded in this
environment as a forward deployment and has not been rolled away from since.
It never inverts the run it undoes (that only works one step back, from a
run that recorded everything); each step kind brings the target release's own
state back (deployments/jobs.py, the runners' `rollback`).

- The default target: after a run that succeeded, the newest such release
  other than the one that runs now, so rolling back twice goes further back
  (R3 → R2 → R1) and never forward. After a deploy that failed or was
  cancelled (the environment may be half on it), the newest such release
  other than the failed one: what ran before is restored. After a rollback
  that failed or was cancelled, the same target again.
- A chosen target: any release that succeeded here (the environment page
  lists them), except the one that runs now.
- When a rollback succeeds, the forward deployments of the release it
  replaced are marked rolled away from (`Deployment.mark_rolled_away`), so
  that release is never a default target again, nor counts for the promotion
  rule of the next environment, until it is deployed forward again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, F, Max, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release, initial_status
from environments.models import Environment
from portal.core import audit
from portal.core.prepared import PreparedQuery, prepared
from portal.core.roles import PolicyError

FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


@dataclass
class Succeeded:
    """A release that succeeded in an environment, as the rollback list shows it."""

    release: Release
    deployment: Deployment  # its newest success here
    rolled_back_at: datetime | None
    rolled_back_by_id: int | None
    runs_now: bool


def last_run(environment: Environment) -> Deployment | None:
    """The newest run that ended (succeeded, failed or cancelled) in the environment."""
    return _last_run.first(environment_id=environment.pk)


# The environment page reads these on every request: compiled once
# (portal/core/prepared.py).
@prepared(environment_id=int)
def _last_run(environment_id: int) -> QuerySet:
    return (
        Deployment.objects.filter(environment_id=environment_id, status__in=FINISHED)
        .select_related("release")
        .latest_first()[:1]
    )


@prepared(environment_id=int, release_id=int)
def _newest_good_run_of_another_release(environment_id: int, release_id: int) -> QuerySet:
    return good_forward_runs(environment_id).exclude(release_id=release_id)[:1]


def good_forward_runs(environment_id: int) -> QuerySet:
    """Forward deployments that succeeded here and were not rolled away from, newest first."""
    return (
        Deployment.objects.filter(
            environment_id=environment_id,
            kind=Kind.DEPLOY,
            status=Status.SUCCEEDED,
            rolled_back_at__isnull=True,
        )
        .select_related("release")
        .latest_first()
    )


def default_target(environment: Environment) -> tuple[Release, Deployment]:
    """(the release a rollback brings back, the run it undoes); PolicyError saying why not."""
    undo = last_run(environment)
    if undo is None:
        raise PolicyError(f"Nothing has run in {environment} yet; there is nothing to roll back.")
    if undo.kind == Kind.ROLLBACK and undo.status != Status.SUCCEEDED:
        # The environment is somewhere between two releases: finish the job.
        return undo.release, undo
    target = _newest_good_run_of_another_release.first(
        environment_id=environment.pk, release_id=undo.release_id
    )
    if target is None:
        raise PolicyError(
            f"No release other than {undo.release.version} succeeded in {environment} without "
            "being rolled back from since: there is nothing to roll back to.",
            field="release",
        )
    return target.release, undo


def chosen_target(environment: Environment, release: Release) -> tuple[Release, Deployment]:
    """(`release`, the run it undoes) if the release may be rolled back to here."""
    if release.application_id != environment.application_id:
        raise PolicyError(
            f"{release} belongs to another application than {environment}.", field="release"
        )
    if not Deployment.objects.filter(
        environment=environment, release=release, status=Status.SUCCEEDED
    ).exists():
        raise PolicyError(
            f"{release.version} never succeeded in {environment}; only a release that ran "
            "here can be rolled back to.",
            field="release",
        )
    undo = last_run(environment)
    runs_now = Deployment.objects.filter(environment=environment).succeeded_latest_first().first()
    if (
        undo is not None
        and undo.status == Status.SUCCEEDED
        and runs_now is not None
        and runs_now.release_id == release.pk
    ):
        raise PolicyError(
            f"{release.version} is what runs in {environment} now; choose an earlier release.",
            field="release",
        )
    return release, undo


def succeeded_releases(
    environment: Environment, runs_now: Deployment | None = None, limit: int = 20
) -> list[Succeeded]:
    """The releases that succeeded here (the newest `limit`), newest success
    first, with their rolled-away mark; two queries however long the history.
    The first entry's deployment is what runs there now (the newest success),
    unless the caller says otherwise with `runs_now`."""
    newest = _newest_successes(limit).list(environment_id=environment.pk)
    if runs_now is None and newest:
        runs_now = newest[0]  # ranked and ordered as succeeded_latest_first: the same row
    # A release is rolled away from while every forward success of it here is marked.
    marks = {
        row["release_id"]: row
        for row in Deployment.objects.filter(
            environment=environment, kind=Kind.DEPLOY, status=Status.SUCCEEDED,
            release_id__in=[d.release_id for d in newest],
        )
        .values("release_id")
        .annotate(
            unmarked=Count("id", filter=Q(rolled_back_at__isnull=True)),
            rolled_back_at=Max("rolled_back_at"),
            rolled_back_by_id=Max("rolled_back_by_id"),
        )
    }  # fmt: skip
    shown = []
    for deployment in newest:
        mark = marks.get(deployment.release_id)
        away = mark is not None and mark["unmarked"] == 0
        shown.append(
            Succeeded(
                release=deployment.release,
                deployment=deployment,
                rolled_back_at=mark["rolled_back_at"] if away else None,
                rolled_back_by_id=mark["rolled_back_by_id"] if away else None,
                runs_now=runs_now is not None and runs_now.pk == deployment.pk,
            )
        )
    return shown


@functools.cache
def _newest_successes(limit: int) -> PreparedQuery:
    """Each release's newest success in an environment, the newest `limit` first."""

    @prepared(environment_id=int)
    def newest_successes(environment_id: int) -> QuerySet:
        # Ranked by id alone in a subquery: ranking the joined rows made Django
        # wrap and alias all 50 of their columns, which took 4 ms to compile.
        ranked = (
            Deployment.objects.filter(environment_id=environment_id, status=Status.SUCCEEDED)
            .annotate(
                rank=Window(
                    RowNumber(),
                    partition_by=[F("release_id")],
                    order_by=[F("finished_at").desc(nulls_last=True), F("id").desc()],
                )
            )
            .filter(rank=1)
            .values("pk")
        )
        return (
            Deployment.objects.filter(pk__in=ranked)
            .select_related("release", "requested_by")
            .latest_first()[:limit]
        )

    return newest_successes


def request_rollback(
    environment: Environment,
    user: User | None = None,
    reason: str = "",
    release: Release | None = None,
    undo: Deployment | None = None,
) -> Deployment:
    """Ask for a rollback to `release` (default: see the module's docstring).

    Manual (a user): the environment's rollback policy decides approvals.
    Automatic (no user, `undo` = the deployment whose bake saw an alarm): no
    approval, high queue.
    """
    if release is not None:
        target, undone = chosen_target(environment, release)
    else:
        target, undone = default_target(environment)
    undo = undo or undone
    if user is not None:
        return Deployment.request(
            target, environment, user, reason, kind=Kind.ROLLBACK, rollback_of=undo
        )
    status = initial_status(environment, 0)
    with transaction.atomic():
        deployment = Deployment.objects.create(
            release=target, environment=environment, kind=Kind.ROLLBACK,
            reason=reason or f"Automatic rollback of #{undo.pk}", rollback_of=undo,
            required_approvals=0, status=status,
            queued_at=timezone.now() if status == Status.QUEUED else None,
        )  # fmt: skip
        audit.record(
            "deployment.rollback_started",
            deployment,
            actor_name="gantry",
            after={"release": target.version, "undo": undo.pk, "reason": deployment.reason},
        )
        deployment.dispatch()
    return deployment
