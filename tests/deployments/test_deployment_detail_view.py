"""A deployment: exactly what an approver signs off, and the buttons to do it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment, Release, StepRun
from portal.core.models import Membership
from tests.conftest import env, image
from tests.environments.ui import browser, succeed  # noqa: F401

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


@pytest.fixture
def deployment(release, users) -> Deployment:
    return Deployment.request(release, env(release.application, "staging"), users["alice"],
                              "Bedrock timeout fix")  # fmt: skip


def url(deployment) -> str:
    return reverse("deployment-detail", args=[deployment.pk])


def test_it_shows_what_is_approved(users, deployment):
    response = browser(users["bob"]).get(url(deployment))
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<span class="badge badge-amber" data-testid="deployment-status">Awaiting approval' in html
    )
    assert "Bedrock timeout fix" in html
    assert 'data-testid="requested-by">alice<' in html
    assert deployment.approval_digest() in html
    for artifact in deployment.release.artifacts.all():
        assert artifact.image_ref in html
    assert "0 of 1 needed" in html


def test_it_diffs_against_what_runs_now(catalog, users):
    old = Release.register(catalog, "1.3.0", {s: image(s, "b") for s in SERVICES}, users["alice"])
    succeed(Deployment.request(old, env(catalog, "staging"), users["alice"], "go"))
    new = Release.register(catalog, "1.4.0", {**{s: image(s, "b") for s in SERVICES},
                                              "fraud-ml": image("fraud-ml", "c")},
                           users["alice"])  # fmt: skip
    deployment = Deployment.request(new, env(catalog, "staging"), users["alice"], "go")
    response = browser(users["bob"]).get(url(deployment))
    changes = {row.service.slug: row.change for row in response.context["changes"]}
    assert changes == {"fraud-api": "unchanged", "fraud-ml": "changed", "fraud-worker": "unchanged"}
    html = response.content.decode()
    assert f"sha256:{'b' * 64}</span><br>→ sha256:{'c' * 64}" in html
    assert "Compared with what runs there now: 1.3.0" in html


def test_every_image_is_new_in_an_empty_environment(users, deployment):
    response = browser(users["bob"]).get(url(deployment))
    assert {row.change for row in response.context["changes"]} == {"new"}


def test_it_lists_approvals_and_whether_they_still_count(release, users, catalog):
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    deployment = Deployment.request(release, production, users["alice"], "go")
    deployment.approve(users["bob"], "Checked the plan")
    # A new plan invalidates approvals given for the old one.
    Deployment.objects.filter(pk=deployment.pk).update(plan_sha256="f" * 64)
    response = browser(users["dave"]).get(url(deployment))
    html = response.content.decode()
    assert "Checked the plan" in html
    assert "no longer valid" in html
    assert "0 of 2 needed" in html
    # bob decided on the old plan only: he may decide on this one.
    again = browser(users["bob"]).get(url(deployment))
    assert ">Approve</button>" in again.content.decode()
    assert not again.context["refusal"]


def test_it_offers_approve_and_reject_to_an_eligible_approver(users, deployment):
    html = browser(users["bob"]).get(url(deployment)).content.decode()
    assert 'name="comment"' in html
    assert ">Approve</button>" in html
    assert ">Reject</button>" in html
    assert reverse("deployment-reject", args=[deployment.pk]) in html


def test_it_tells_others_why_they_cannot_approve(users, deployment):
    requester = browser(users["alice"]).get(url(deployment))
    assert ">Approve</button>" not in requester.content.decode()
    assert "someone else must approve" in requester.context["refusal"]
    viewer = browser(users["dave"]).get(url(deployment))
    assert ">Approve</button>" not in viewer.content.decode()
    assert "approver role" in viewer.context["refusal"]


def test_it_offers_cancel_to_the_requester_and_admins(users, deployment):
    button = ">Cancel request</button>"
    assert button in browser(users["alice"]).get(url(deployment)).content.decode()
    assert button in browser(users["erin"]).get(url(deployment)).content.decode()
    assert button not in browser(users["bob"]).get(url(deployment)).content.decode()
    assert "return confirm(" in browser(users["alice"]).get(url(deployment)).content.decode()


def test_htmx_gets_the_status_partial(users, deployment):
    response = browser(users["bob"]).get(url(deployment), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert 'data-testid="deployment-status"' in html
    assert "<html" not in html


def test_it_keeps_a_constant_number_of_queries(deployment, users,
                                               django_assert_max_num_queries):  # fmt: skip
    client = browser(users["dave"])
    with django_assert_max_num_queries(12):
        client.get(url(deployment))
    deployment.approve(users["bob"], "ok")  # fills the one approval staging needs
    with django_assert_max_num_queries(12):
        client.get(url(deployment))


def test_it_hides_deployments_of_environments_without_a_role(users, deployment):
    assert browser(users["mallory"]).get(url(deployment)).status_code == 404


@pytest.mark.parametrize(
    "page", ["deployment-detail", "deployment-steps", "deployment-evidence-html"]
)
def test_a_role_in_a_sibling_environment_does_not_show_it(catalog, users, deployment, page):
    """The page reads the deployment by its key and then asks for a role in
    its own environment: a role next door (same application) is not one, and
    a role withdrawn between two requests of one session stops showing it."""
    Membership.objects.filter(user=users["dave"]).exclude(environment__slug="staging").delete()
    dave = browser(users["dave"])
    assert dave.get(reverse(page, args=[deployment.pk])).status_code == 200
    Membership.objects.filter(user=users["dave"]).update(environment=env(catalog, "dev"))
    assert dave.get(reverse(page, args=[deployment.pk])).status_code == 404
    assert browser(users["mallory"]).get(reverse(page, args=[deployment.pk])).status_code == 404


def test_it_refuses_post(users, deployment):
    assert browser(users["bob"]).post(url(deployment)).status_code == 405


def test_it_needs_sign_in(client, deployment):
    assert client.get(url(deployment))["Location"].startswith(reverse("login"))


def plan_run(deployment, **outputs) -> StepRun:
    return StepRun.objects.create(
        deployment=deployment, order=1, name="infra", kind="terraform", phase="plan",
        status="succeeded", outputs=outputs,
    )  # fmt: skip


def test_it_shows_the_terraform_plan_approvals_bind_to(users, deployment):
    sha = "c" * 64
    plan_run(deployment, plan_sha256=sha, summary={"add": 1, "change": 1, "destroy": 0},
             resource_changes=[
                 {"address": "aws_sqs_queue.fraud_events", "type": "aws_sqs_queue",
                  "actions": ["create"], "attributes": [{"name": "name", "before": None,
                                                         "after": "fraud-events"}]},
                 {"address": 'aws_ssm_parameter.flag["<b>x</b>"]', "type": "aws_ssm_parameter",
                  "actions": ["update"], "attributes": []},
             ])  # fmt: skip
    html = browser(users["bob"]).get(url(deployment)).content.decode()
    assert 'data-testid="plan"' in html
    assert f'data-testid="plan-sha256">{sha}<' in html
    assert "aws_sqs_queue.fraud_events" in html and ">create<" in html
    assert "name: — → fraud-events" in html
    assert "aws_ssm_parameter.flag[&quot;&lt;b&gt;x&lt;/b&gt;&quot;]" in html  # escaped
    assert "<b>x</b>" not in html
    assert "1 to add, 1 to change, 0 to destroy" in html
    assert "Approvals bind to this exact plan" in html


def test_it_has_a_live_log_panel_and_the_step_list(users, deployment):
    StepRun.objects.create(deployment=deployment, order=1, name="migrate", kind="command",
                           status="running")  # fmt: skip
    html = browser(users["dave"]).get(url(deployment)).content.decode()
    assert f'data-ws-path="/ws/deployments/{deployment.pk}/logs/"' in html
    assert f'data-poll-url="/api/v1/deployments/{deployment.pk}/logs/"' in html
    assert f'data-steps-url="{reverse("deployment-steps", args=[deployment.pk])}"' in html
    assert "/static/js/deployment_log.js" in html
    assert 'data-step-status="running"' in html and "migrate" in html


def test_it_offers_roll_back_on_the_deployment_that_runs_now(release, users, catalog):
    staging = env(catalog, "staging")
    newer = Release.register(catalog, "1.5.0", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    older = succeed(Deployment.request(release, staging, users["alice"], "first"),
                    timezone.now() - timedelta(hours=1))  # fmt: skip
    current = succeed(Deployment.request(newer, staging, users["alice"], "second"))
    rollback = reverse("environment-rollback", args=["fraud-detector", "staging"])
    assert rollback in browser(users["alice"]).get(url(current)).content.decode()
    assert rollback not in browser(users["alice"]).get(url(older)).content.decode()
    assert rollback not in browser(users["dave"]).get(url(current)).content.decode()


def test_it_offers_cancel_on_a_running_deployment(users, deployment):
    Deployment.objects.filter(pk=deployment.pk).update(status="running")
    html = browser(users["alice"]).get(url(deployment)).content.decode()
    assert ">Cancel deployment</button>" in html
    assert "Stop the running deployment" in html
    Deployment.objects.filter(pk=deployment.pk).update(cancel_requested_at=timezone.now())
    html = browser(users["alice"]).get(url(deployment)).content.decode()
    assert ">Cancel deployment</button>" not in html and "Cancel requested" in html


def test_a_finished_deployment_keeps_the_diff_of_its_time(catalog, users):
    """Once later releases ran, a finished deployment's page still shows what it
    changed then, not a comparison with itself or with what runs now."""
    staging = env(catalog, "staging")
    first = Release.register(catalog, "1.3.0", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    second = Release.register(catalog, "1.4.0", {**{s: image(s, "b") for s in SERVICES},
                                                 "fraud-ml": image("fraud-ml", "c")},
                              users["alice"])  # fmt: skip
    third = Release.register(catalog, "1.5.0", {s: image(s, "d") for s in SERVICES},
                             users["alice"])  # fmt: skip
    ran = [succeed(Deployment.request(r, staging, users["alice"], "go"))
           for r in (first, second, third)]  # fmt: skip

    client = browser(users["bob"])
    client.get(url(ran[1]))  # the session and role caches warm, as on a second look
    # The page's own release (1.4.0), what runs now (1.5.0) and what ran then
    # (1.3.0) are three releases; their artifacts come in one query.
    # Each list is copied at once: the next request empties the query log it views.
    with CaptureQueriesContext(connection) as captured:
        middle = client.get(url(ran[1]))
    finished = [q["sql"] for q in captured.captured_queries]
    reopened = Deployment.request(first, staging, users["alice"], "again")
    with CaptureQueriesContext(connection) as captured:
        client.get(url(reopened))
    open_request = [q["sql"] for q in captured.captured_queries]
    oldest = client.get(url(ran[0]))

    changes = {row.service.slug: row.change for row in middle.context["changes"]}
    assert changes == {"fraud-api": "unchanged", "fraud-ml": "changed", "fraud-worker": "unchanged"}
    assert "Compared with what ran there when it started: 1.3.0" in middle.content.decode()
    assert {row.change for row in oldest.context["changes"]} == {"new"}
    assert "Nothing ran there before it" in oldest.content.decode()
    assert len([sql for sql in finished if '"deployments_artifact"' in sql]) == 1
    assert len(finished) <= len(open_request) + 1  # + the compared run
