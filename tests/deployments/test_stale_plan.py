"""A deployment planned while another one was in flight: when its turn
comes, the other has applied to the same Terraform state and the saved plan
is stale. The engine plans again before anything runs, the approvals given
for the old plan stop counting, and the approvers decide on the new one.
Real RQ jobs, the real terraform binary and a moto server, as in
test_engine_flow."""

from __future__ import annotations

import json

import pytest

from deployments.choices import Status
from deployments.models import Deployment, LogLine
from portal.core.models import AuditEvent
from tests.conftest import work
from tests.deployments.test_engine_flow import (  # noqa: F401 (fixtures)
    sandbox_env,
    second_release,
    staging,
    task_image,
)
from tests.runners.conftest import demo_aws, moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def planned(release, staging, users, queues) -> Deployment:
    deployment = Deployment.request(release, staging, users["alice"], f"ship {release.version}")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    return deployment


def applied_release(sandbox_env) -> str:
    state = sandbox_env / "state" / "staging" / "terraform.tfstate"
    return json.loads(state.read_text())["outputs"]["release_version"]["value"]


def test_a_plan_made_stale_by_another_run_is_made_again_and_approved_again(
    staging, release, users, queues, catalog, sandbox_env, demo_aws, moto_endpoint
):
    first = planned(release, staging, users, queues)
    newer = second_release(catalog, users)
    second = planned(newer, staging, users, queues)  # against the same, still empty, state
    old_plan = second.plan_sha256

    first.approve(users["bob"])
    work(queues)
    first.refresh_from_db()
    assert first.status == Status.SUCCEEDED, first.error

    second.approve(users["bob"])
    work(queues)  # the run finds its plan stale, plans again, and waits
    second.refresh_from_db()
    assert second.status == Status.AWAITING_APPROVAL, second.error
    assert second.plan_sha256 != old_plan
    assert not second.valid_approvals().exists()  # bob approved the old plan
    assert applied_release(sandbox_env) == "1.4.0"  # nothing of the stale plan ran
    assert not second.step_runs.filter(phase="deploy").exists()
    replanned = AuditEvent.objects.get(action="deployment.replanning", target_id=str(second.pk))
    assert f"#{first.pk} applied step 1 (Terraform)" in replanned.after["reason"]
    text = "\n".join(LogLine.objects.filter(deployment=second).values_list("text", flat=True))
    assert "The saved plan is stale" in text

    second.approve(users["bob"], "new plan reviewed")  # a decision on the new plan
    work(queues)
    second.refresh_from_db()
    assert second.status == Status.SUCCEEDED, second.error
    assert applied_release(sandbox_env) == "1.5.0"
    assert task_image(moto_endpoint, demo_aws["cluster"]) == newer.artifact_map()["fraud-api"]
    actions = list(
        AuditEvent.objects.filter(target_id=str(second.pk), target_type="deployments.deployment")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == [
        "deployment.requested", "deployment.planned", "deployment.policy_evaluated",
        "deployment.awaiting_approval",
        "deployment.approved", "deployment.queued", "deployment.started",
        "deployment.replanning", "deployment.planned", "deployment.policy_evaluated",
        "deployment.awaiting_approval",
        "deployment.approved", "deployment.queued", "deployment.started", "deployment.succeeded",
    ]  # fmt: skip


def test_a_plan_made_after_the_other_run_applied_is_not_stale(
    staging, release, users, queues, catalog
):
    first = planned(release, staging, users, queues)
    first.approve(users["bob"])
    work(queues)
    second = planned(second_release(catalog, users), staging, users, queues)
    second.approve(users["bob"])
    work(queues)
    second.refresh_from_db()
    assert second.status == Status.SUCCEEDED, second.error
    assert not AuditEvent.objects.filter(action="deployment.replanning").exists()
