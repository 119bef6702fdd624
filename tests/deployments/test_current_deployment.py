"""One rule for what runs in an environment now, wherever it is asked: the
latest succeeded deployment by finish time, one without a finish time (a
row recorded by hand) last, then the latest created."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release, with_current_deployment
from deployments.rollback import request_rollback
from deployments.views import rollback_plan
from environments.models import Environment
from tests.conftest import env, image

pytestmark = pytest.mark.django_db


def older_release(catalog, users) -> Release:
    """1.3.0, the release before the `release` fixture's."""
    return Release.register(
        catalog, "1.3.0", {s: image(s, "b") for s in ("fraud-api", "fraud-ml", "fraud-worker")},
        users["alice"],
    )  # fmt: skip


def ran(release, environment, users, finished_at) -> Deployment:
    return Deployment.objects.create(
        release=release, environment=environment, reason="ran", requested_by=users["alice"],
        status=Status.SUCCEEDED, finished_at=finished_at,
    )  # fmt: skip


def test_every_caller_agrees_when_a_finish_time_is_missing(catalog, release, users):
    dev = env(catalog, "dev")
    older = older_release(catalog, users)
    now = timezone.now()
    ran(older, dev, users, now - timedelta(days=2))
    current = ran(release, dev, users, now - timedelta(hours=1))
    ran(older, dev, users, None)  # recorded by hand, no finish time: not "now"

    assert Deployment.objects.filter(environment=dev).succeeded_latest_first().first() == current
    annotated = with_current_deployment(Environment.objects.filter(pk=dev.pk)).get()
    assert annotated.current_deployment_id == current.pk
    plan = rollback_plan(dev)
    assert plan.current == current
    rollback = request_rollback(dev, users["alice"], "back to 1.3.0")
    # The page said what a rollback would undo and bring back; it does exactly that.
    assert rollback.kind == Kind.ROLLBACK
    assert rollback.rollback_of == plan.undo == current
    assert rollback.release == plan.target == older
