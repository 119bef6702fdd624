"""Policy as code on every plan: the plan job judges each real Terraform plan
with the Rego policies (regorus), the verdict gates the approval flow, and
approvals bind to the policy files. Real RQ jobs, real terraform, a moto
server; the policies are the bundled ones plus one written here for the
fraud-detector module's null resources (its provider has no AWS resources)."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.urls import reverse

from deployments import evidence
from deployments.choices import Status
from deployments.models import Deployment, PolicyCheck
from environments.models import FreezeOverride
from portal.core.models import AuditEvent
from portal.core.roles import Conflict, Forbidden, PolicyError
from tests.api.conftest import api  # noqa: F401
from tests.conftest import work
from tests.deployments.test_engine_flow import sandbox_env, staging  # noqa: F401
from tests.runners.conftest import demo_aws, moto_endpoint, terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RELEASE_POLICY = """
package gantry.policies.release_marker

import rego.v1

import data.gantry.lib.terraform as tf

violations contains {"level": "%(level)s", "address": rc.address,
                     "message": sprintf("%%s changes the release marker.", [rc.address])} if {
	some rc in tf.changes("null_resource")
	rc.name == "release"
	tf.writes(rc)
}
"""

FINANCE_POLICY = """
package gantry.policies.finance_review

import rego.v1

extra_approvals contains {"group": "finance", "count": 1,
                          "message": "Every plan here is reviewed by finance."} if true
"""


@pytest.fixture
def policies(tmp_path, settings):
    """The bundled policies in a directory of their own; `add(name, text)` adds one."""
    directory = tmp_path / "policies"
    shutil.copytree(settings.BASE_DIR / "policies", directory)
    settings.POLICY_DIR = directory

    def add(name: str, text: str) -> None:
        (directory / f"{name}.rego").write_text(text)

    return add


def planned(release, staging, users, queues) -> Deployment:  # noqa: F811
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL, deployment.error
    return deployment


def test_a_soft_violation_waits_for_an_admins_reasoned_override(
    policies,
    release,
    staging,
    users,
    queues,
    api,  # noqa: F811
):
    policies("release_marker", RELEASE_POLICY % {"level": "soft_mandatory"})
    staging.required_approvals = 1
    staging.save()
    deployment = planned(release, staging, users, queues)

    check = deployment.policy()
    assert check.outcome == "override_required"
    assert [(v["policy"], v["level"], v["address"], v["step"]) for v in check.violations] == [
        ("release_marker", "soft_mandatory", "null_resource.release", "Terraform")
    ]
    logged = "\n".join(deployment.log_lines.values_list("text", flat=True))
    assert "Policy release_marker (soft_mandatory) at null_resource.release" in logged
    # Approved, but held: the quorum alone does not release it.
    deployment.approve(users["bob"])
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL

    with pytest.raises(Forbidden, match="You requested"):
        deployment.override_policy(users["alice"], "needed")
    with pytest.raises(Forbidden, match="Only admins"):
        deployment.override_policy(users["carol"], "needed")
    with pytest.raises(PolicyError, match="Say why"):
        deployment.override_policy(users["erin"], "   ")
    body = api("erin").post(
        reverse("api-deployment-policy-override", args=[deployment.pk]),
        {"reason": "Marker change reviewed with the risk team (CHG-4411)"},
        format="json",
    )

    assert body.status_code == 200, body.json()
    assert body.json()["status"] == Status.QUEUED
    policy = body.json()["policy"]
    assert policy["outcome"] == "override_required"
    assert policy["override"]["by"] == "erin"
    assert policy["override"]["reason"] == "Marker change reviewed with the risk team (CHG-4411)"
    assert body.json()["emergency"] is True  # reviewed after it runs, by someone not involved
    with pytest.raises(Conflict):
        deployment.override_policy(users["erin"], "again")  # no longer awaiting approval
    event = AuditEvent.objects.get(action="deployment.policy_overridden")
    assert event.actor_id == users["erin"].pk
    assert event.after["violations"][0]["address"] == "null_resource.release"
    pack = evidence.build_pack(Deployment.objects.get(pk=deployment.pk))
    assert pack["policy_check"]["override"]["by"]["username"] == "erin"


def test_a_hard_violation_refuses_approval_until_break_glass(
    policies,
    release,
    staging,
    users,
    queues,  # noqa: F811
):
    policies("release_marker", RELEASE_POLICY % {"level": "hard_mandatory"})
    staging.required_approvals = 1
    staging.save()
    deployment = planned(release, staging, users, queues)
    assert deployment.policy().outcome == "blocked"

    with pytest.raises(PolicyError, match="Policy blocks this plan: release_marker"):
        deployment.approve(users["bob"])
    with pytest.raises(PolicyError, match="no one can override it"):
        deployment.override_policy(users["erin"], "please")
    assert not deployment.approvals.exists()

    glass = FreezeOverride.request(staging, users["erin"], "Outage INC-88", timedelta(hours=1))
    glass.approve(users["carol"])
    deployment.approve(users["bob"])
    deployment.refresh_from_db()

    assert deployment.status == Status.QUEUED
    queued = AuditEvent.objects.get(action="deployment.queued", target_id=str(deployment.pk))
    assert queued.after["policy_break_glass"] == glass.pk


def test_a_policy_asking_for_finance_raises_the_quorum(
    policies,
    release,
    staging,
    users,
    queues,  # noqa: F811
):
    policies("finance_review", FINANCE_POLICY)
    staging.required_approvals = 1
    staging.approver_group = Group.objects.create(name="release-approvers")
    staging.save()
    users["bob"].groups.add(staging.approver_group)
    finance = Group.objects.create(name="finance")
    users["carol"].groups.add(finance)  # approver role, not in the approver group
    deployment = planned(release, staging, users, queues)
    assert deployment.policy().outcome == "pass"
    assert deployment.approvals_needed() == 2

    deployment.approve(users["bob"])
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL  # one more, from finance
    deployment.approve(users["carol"])
    deployment.refresh_from_db()

    assert deployment.status == Status.QUEUED


def test_approvals_bind_to_the_policy_files(policies, release, staging, users, queues):  # noqa: F811
    staging.required_approvals = 2
    staging.save()
    deployment = planned(release, staging, users, queues)
    before = deployment.approval_digest()
    deployment.approve(users["bob"])

    # The same plan judged by other policy files is another thing to approve.
    PolicyCheck.objects.filter(deployment=deployment).update(policy_sha256="0" * 64)
    deployment = Deployment.objects.get(pk=deployment.pk)

    assert deployment.approval_digest() != before
    assert deployment.valid_approvals().count() == 0


def test_policy_files_that_do_not_parse_fail_the_plan_saying_so(
    policies,
    release,
    staging,
    users,
    queues,  # noqa: F811
):
    policies("broken", "package gantry.policies.broken\n\nviolations contains {")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    work(queues)
    deployment.refresh_from_db()

    assert deployment.status == Status.FAILED
    assert deployment.error.startswith("Planning failed: The policies could not be evaluated")
    assert "internal error" not in deployment.error.lower()


def test_a_plan_without_findings_passes_and_is_shown(release, staging, users, queues, api):  # noqa: F811
    assert settings.POLICY_DIR.name == "policies"
    deployment = planned(release, staging, users, queues)
    shown = api("dave").get(reverse("api-deployment-detail", args=[deployment.pk])).json()

    assert shown["policy"]["outcome"] == "pass"
    assert shown["policy"]["violations"] == []
    assert len(shown["policy"]["policy_sha256"]) == 64
    assert shown["approvals_needed"] == deployment.required_approvals
