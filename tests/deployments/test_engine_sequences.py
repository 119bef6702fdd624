"""The deploy engine under random sequences (a Hypothesis state machine).

Real pieces: RQ jobs on Redis run by a burst worker, a moto server's ECS and
CloudWatch, the FAKE Kubernetes API (no real API server can run here), the
ecs_rolling, k8s_rolling, command and bake runners. Each example gets an
application of its own (its own ECS cluster, namespace and alarms), then a
random sequence of: register a release, request, approve, reject, cancel a
request, make the next run fail after it changed the services, fire an alarm
during the next bake (an automatic rollback follows), roll back to the
default target or to a chosen release.

After every step, with the queues drained: no deployment ended in an
internal error; nothing is left planning, queued or running; after a run
that succeeded, what runs in ECS and in Kubernetes is Gantry's current
release; a rollback never targets the release it rolls away from; every
deployment has at most one event per state change; the audit chain verifies.

`make test` runs a few examples with a fixed seed; `make soak` runs many
(SEQUENCE_EXAMPLES, SEQUENCE_STEPS) and writes the figures to
$SEQUENCE_REPORT when set (docs/RELIABILITY.md, "Sequences").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time

import boto3
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from kubernetes import client

from deployments import sandbox
from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from deployments.rollback import default_target, request_rollback
from environments.choices import Tier
from environments.models import Application, Environment, Service, Step
from portal.core.audit_chain import verify_chain
from portal.core.choices import Role
from portal.core.models import AuditEvent, Membership
from portal.core.roles import PolicyError
from tests.conftest import work
from tests.runners.conftest import kube_api, moto_endpoint  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
EXAMPLES = int(os.environ.get("SEQUENCE_EXAMPLES", "4"))
STEPS = int(os.environ.get("SEQUENCE_STEPS", "10"))
OPEN = (Status.PLANNING, Status.AWAITING_APPROVAL, Status.QUEUED, Status.RUNNING)
STATE_CHANGES = ("deployment.queued", "deployment.started", "deployment.succeeded",
                 "deployment.failed", "deployment.cancelled", "deployment.rejected")  # fmt: skip
_names = itertools.count(1)


def image(service: str, version: str) -> str:
    digest = hashlib.sha256(version.encode()).hexdigest()
    return f"123456789012.dkr.ecr.ca-central-1.amazonaws.com/{service}@sha256:{digest}"


class EngineSequences(RuleBasedStateMachine):
    """One application with one environment, driven through the real engine."""

    world: dict = {}  # set by the test: users, queues, moto endpoint, fake Kubernetes API

    def __init__(self) -> None:
        super().__init__()
        self.versions = itertools.count(1)
        self.figures = self.world["figures"]
        self.figures["examples"] += 1

    def make_catalog(self) -> None:
        n = next(_names)
        users, endpoint, kube = self.world["users"], self.world["moto"], self.world["kube"]
        self.name = f"seq{n}"
        self.app = Application.objects.create(slug=f"app-{self.name}", name=f"App {self.name}")
        for slug in SERVICES:
            Service.objects.create(application=self.app, slug=slug, name=slug)
        self.env = Environment.objects.create(
            application=self.app, slug="dev", name="Dev", order=1, tier=Tier.DEVELOPMENT,
            required_approvals=1, rollback_required_approvals=0, variables={"hook": "true"},
        )  # fmt: skip
        for user, role in (("alice", Role.DEPLOYER), ("bob", Role.APPROVER),
                           ("carol", Role.APPROVER)):  # fmt: skip
            Membership.objects.create(user=users[user], environment=self.env, role=role)
        aws = sandbox.create_demo_aws(endpoint, self.name)
        self.cluster, self.alarm = aws["cluster"], aws["alarms"][0]
        self.namespace = f"ns-{self.name}"
        for service in SERVICES:
            kube.cluster.add_deployment(self.namespace, service, {service: image(service, "0")})
        Step.objects.bulk_create([
            Step(environment=self.env, order=1, name="ECS", kind="ecs_rolling", config={
                "cluster": self.cluster, "services": ["fraud-api", "fraud-ml"],
                "timeout_seconds": 60, "poll_seconds": 0.05}),
            Step(environment=self.env, order=2, name="Kubernetes", kind="k8s_rolling", config={
                "namespace": self.namespace, "deployments": list(SERVICES),
                "timeout_seconds": 60, "poll_seconds": 0.05}),
            Step(environment=self.env, order=3, name="Hook", kind="command",
                 config={"argv": ["sh", "-c", "${var.hook}"], "rollback_argv": ["true"]}),
            Step(environment=self.env, order=4, name="Bake", kind="bake", config={
                "duration_seconds": 0.2, "poll_seconds": 0.05,
                "cloudwatch": {"alarm_names": [self.alarm]}}),
        ])  # fmt: skip

    # -- helpers --------------------------------------------------------------------

    def drain(self) -> None:
        work(self.world["queues"])

    def open_requests(self, status: str) -> list[Deployment]:
        return list(Deployment.objects.filter(environment=self.env, status=status).order_by("pk"))

    def set_alarm(self, state: str) -> None:
        cloudwatch = boto3.client("cloudwatch", endpoint_url=self.world["moto"],
                                  region_name="ca-central-1")  # fmt: skip
        cloudwatch.set_alarm_state(AlarmName=self.alarm, StateValue=state, StateReason="test")

    def count(self, what: str) -> None:
        self.figures[what] = self.figures.get(what, 0) + 1

    # -- rules ------------------------------------------------------------------------

    def releases(self) -> list[Release]:
        return list(Release.objects.filter(application=self.app).order_by("pk"))

    def waiting(self) -> list[Deployment]:
        return self.open_requests(Status.AWAITING_APPROVAL)

    def new_release(self) -> Release:
        version = f"1.{next(self.versions)}"
        self.count("releases")
        return Release.register(self.app, version, {s: image(s, version) for s in SERVICES},
                                self.world["users"]["alice"])  # fmt: skip

    def ask(self, release: Release) -> Deployment | None:
        try:
            deployment = Deployment.request(release, self.env, self.world["users"]["alice"], "seq")
        except PolicyError:
            self.count("refused requests")  # e.g. one already open for it
            return None
        self.count("requests")
        return deployment

    def approve_first(self, hook: str = "true", alarm: bool = False) -> None:
        """Approve the oldest waiting request and let the worker run it, with the
        hook step doing `hook` and the bake seeing `alarm`."""
        waiting = self.waiting()
        if not waiting:
            return
        Environment.objects.filter(pk=self.env.pk).update(variables={"hook": hook})
        if alarm:
            self.set_alarm("ALARM")
        try:
            waiting[0].approve(self.world["users"]["bob"], "fine")
            self.drain()  # the run, and an automatic rollback if the bake saw the alarm
        finally:
            Environment.objects.filter(pk=self.env.pk).update(variables={"hook": "true"})
            if alarm:
                self.set_alarm("OK")

    @initialize()
    def first_release_runs(self) -> None:
        self.make_catalog()
        self.ask(self.new_release())
        self.approve_first()

    @precondition(lambda self: len(self.releases()) < 6)
    @rule(deploy=st.booleans())
    def register(self, deploy: bool) -> None:
        release = self.new_release()
        if deploy:
            self.ask(release)
            self.approve_first()

    @rule(data=st.data())
    def request(self, data) -> None:
        self.ask(data.draw(st.sampled_from(self.releases())))

    @precondition(lambda self: self.waiting())
    @rule()
    def approve(self) -> None:
        self.approve_first()
        self.count("approved")

    @precondition(lambda self: self.waiting())
    @rule()
    def reject(self) -> None:
        self.waiting()[-1].reject(self.world["users"]["carol"], "not now")
        self.count("rejected")

    @precondition(lambda self: self.waiting())
    @rule()
    def cancel(self) -> None:
        self.waiting()[0].cancel(self.world["users"]["alice"], "changed my mind")
        self.count("cancelled")

    @precondition(lambda self: self.waiting())
    @rule()
    def a_run_fails_after_changing_the_services(self) -> None:
        self.approve_first(hook="exit 3")
        self.count("injected failures")

    @precondition(lambda self: self.waiting())
    @rule()
    def an_alarm_fires_during_the_bake(self) -> None:
        self.approve_first(alarm=True)
        self.count("alarms fired")

    @rule()
    def roll_back(self) -> None:
        try:
            target, undo = default_target(self.env)
            rollback = request_rollback(self.env, self.world["users"]["alice"], "sequence")
        except PolicyError:
            self.count("refused rollbacks")
            return
        # Never forward: not back to what it rolls away from (unless retrying a
        # failed rollback to the same target), never to a rolled-away release.
        assert rollback.release == target
        if undo.kind == Kind.DEPLOY or undo.status == Status.SUCCEEDED:
            assert target != undo.release
        self.drain()
        self.count("rollbacks")

    @rule(data=st.data())
    def roll_back_to_a_chosen_release(self, data) -> None:
        succeeded = list(
            Release.objects.filter(
                deployments__environment=self.env, deployments__status=Status.SUCCEEDED
            ).distinct().order_by("pk")
        )  # fmt: skip
        if not succeeded:
            return
        release = data.draw(st.sampled_from(succeeded))
        try:
            request_rollback(self.env, self.world["users"]["alice"], "chosen", release=release)
        except PolicyError:
            self.count("refused rollbacks")
            return
        self.drain()
        self.count("chosen rollbacks")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def nothing_ends_in_an_internal_error(self) -> None:
        errors = Deployment.objects.filter(environment=self.env, error__contains="Internal error")
        assert not errors.exists(), list(errors.values_list("pk", "error"))

    @invariant()
    def nothing_is_left_waiting_for_a_worker(self) -> None:
        left = Deployment.objects.filter(
            environment=self.env, status__in=(Status.PLANNING, Status.QUEUED, Status.RUNNING)
        )
        assert not left.exists(), list(left.values_list("pk", "status"))

    @invariant()
    def what_runs_is_what_gantry_says_runs(self) -> None:
        finished = Deployment.objects.filter(
            environment=self.env, status__in=(Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
        ).latest_first()
        last = finished.first()
        if last is None or last.status != Status.SUCCEEDED:
            return  # after a failed run the environment may be half on it: a rollback says
        current = Deployment.objects.filter(environment=self.env).succeeded_latest_first().first()
        artifacts = current.release.artifact_map()
        ecs = boto3.client("ecs", endpoint_url=self.world["moto"], region_name="ca-central-1")
        for service in ("fraud-api", "fraud-ml"):
            arn = ecs.describe_services(cluster=self.cluster, services=[service])["services"][0][
                "taskDefinition"
            ]
            found = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
            assert found["containerDefinitions"][0]["image"] == artifacts[service], service
        apps = client.AppsV1Api(client.ApiClient(client.Configuration(host=self.world["kube"].url)))
        for service in SERVICES:
            deployment = apps.read_namespaced_deployment(service, self.namespace)
            assert deployment.spec.template.spec.containers[0].image == artifacts[service]
        self.count("reality checks")

    @invariant()
    def one_event_per_state_change(self) -> None:
        for pk in Deployment.objects.filter(environment=self.env).values_list("pk", flat=True):
            actions = list(
                AuditEvent.objects.filter(
                    target_type="deployments.deployment", target_id=str(pk),
                    action__in=STATE_CHANGES,
                ).values_list("action", flat=True)
            )  # fmt: skip
            assert len(actions) == len(set(actions)), (pk, actions)

    @invariant()
    def the_audit_chain_verifies(self) -> None:
        assert verify_chain().ok


def test_the_engine_holds_its_invariants_under_random_sequences(
    users,
    queues,
    moto_endpoint,
    kube_api,
    monkeypatch,
    settings,
    tmp_path,  # noqa: F811
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("KUBE_API_URL", kube_api.url)
    settings.DEPLOY_WORKDIR = str(tmp_path)
    figures = {"examples": 0}
    EngineSequences.world = {"users": users, "queues": queues, "moto": moto_endpoint,
                             "kube": kube_api, "figures": figures}  # fmt: skip
    started = time.monotonic()
    run_state_machine_as_test(
        EngineSequences,
        settings=settings_for_run(),
    )
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["deployments"] = Deployment.objects.count()
    figures["rollback deployments"] = Deployment.objects.filter(kind=Kind.ROLLBACK).count()
    report = os.environ.get("SEQUENCE_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(json.dumps(figures) + "\n")
    assert figures["examples"] >= 1 and figures.get("reality checks", 0) >= 1, figures


def settings_for_run():
    return hypothesis_settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        # A fixed seed in `make test`; `make soak` draws new sequences each run.
        derandomize=os.environ.get("SEQUENCE_RANDOM") != "1",
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        print_blob=True,
    )
