"""A deployment carried through its whole life, for the timeline and evidence tests.

The state changes go through the model methods (so the audit events are the
real ones); the rows the deploy job would write (step runs, log lines) are
written directly, with known times, as the job would leave them.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from deployments.choices import Status, StepStatus
from deployments.models import Deployment, LogLine, Release, StepRun
from environments.choices import AlarmSource, AlarmState, StepKind
from environments.models import Alarm, AlarmTransition, Step
from tests.conftest import env

PLAN_SHA = "5f" * 32
RESOURCE_CHANGES = [
    {"address": "aws_ecs_service.fraud_api", "actions": ["update"],
     "attributes": [{"name": "desired_count", "before": 2, "after": 3}]},
    {"address": "aws_nat_gateway.main[1]", "actions": ["create"], "attributes": []},
]  # fmt: skip
LOG = [
    ("stdout", "Terraform will perform the following actions: 1 to add, 1 to change"),
    ("stdout", "fraud-api: service fraud-api-production is stable"),
    ("stderr", "warning: HighErrorRate watched for 300 s — «ca-central-1»"),
    ("system", "Deployment succeeded."),
]


def shipped(release: Release, users: dict[str, User]) -> Deployment:
    """fraud-detector 1.4.0 to production: planned, approved by bob and carol,
    run (terraform apply, ECS rolling update, bake) and succeeded."""
    production = env(release.application, "production")
    steps = [("Terraform", StepKind.TERRAFORM), ("Rolling update", StepKind.ECS_ROLLING),
             ("Bake", StepKind.BAKE)]  # fmt: skip
    for order, (name, kind) in enumerate(steps, start=1):
        Step.objects.create(environment=production, order=order, name=name, kind=kind)
    # Production needs staging first: staging ran 1.4.0 already.
    Deployment.objects.create(
        release=release, environment=env(release.application, "staging"), reason="soak",
        status=Status.SUCCEEDED, requested_by=users["alice"], finished_at=timezone.now(),
    )  # fmt: skip
    deployment = Deployment.request(release, production, users["alice"], "Bedrock timeout fix")
    t0 = timezone.now()
    StepRun.objects.create(
        deployment=deployment, phase="plan", order=1, name="Terraform", kind=StepKind.TERRAFORM,
        status=StepStatus.SUCCEEDED, started_at=t0, finished_at=t0 + timedelta(seconds=4),
        outputs={"plan_sha256": PLAN_SHA, "resource_changes": RESOURCE_CHANGES,
                 "summary": {"add": 1, "change": 1, "destroy": 0}},
    )  # fmt: skip
    deployment.record_plan(PLAN_SHA, {"resource_changes": len(RESOURCE_CHANGES)})
    deployment.approve(users["bob"], "diff checked")
    deployment.approve(users["carol"], "")
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED, deployment.status
    assert deployment.start("worker-1:4242")
    begun = timezone.now()
    # Milliseconds, so the run really ends before finish() stamps the result.
    durations = [
        ("Terraform", StepKind.TERRAFORM, 10),
        ("Rolling update", StepKind.ECS_ROLLING, 20),
        ("Bake", StepKind.BAKE, 30),
    ]
    runs, at = [], begun
    for order, (name, kind, millis) in enumerate(durations, start=1):
        runs.append(StepRun.objects.create(
            deployment=deployment, phase="deploy", order=order, name=name, kind=kind,
            status=StepStatus.SUCCEEDED, started_at=at,
            finished_at=at + timedelta(milliseconds=millis),
            outputs={"applied": True, "services": ["fraud-api", "fraud-ml"]} if order < 3
            else {"checks": 10, "duration_seconds": millis / 1000},
        ))  # fmt: skip
        at += timedelta(milliseconds=millis)
    LogLine.objects.bulk_create(
        LogLine(deployment=deployment, seq=seq, step=runs[min(seq - 1, 2)], stream=stream,
                text=text, at=begun + timedelta(milliseconds=10 * seq))
        for seq, (stream, text) in enumerate(LOG, start=1)
    )  # fmt: skip
    time.sleep(max(0.0, (at - timezone.now()).total_seconds()) + 0.01)
    assert deployment.finish(Status.SUCCEEDED)
    return deployment


def alarm_history(deployment: Deployment) -> dict[str, AlarmTransition]:
    """HighErrorRate fires and clears during the bake; ServiceDown changed before it."""
    bake = deployment.step_runs.get(phase="deploy", kind=StepKind.BAKE)
    production = deployment.environment
    alarm = Alarm.objects.create(
        environment=production, source=AlarmSource.ALERTMANAGER, name="HighErrorRate",
        state=AlarmState.OK, since=bake.finished_at, checked_at=bake.finished_at,
    )  # fmt: skip
    down = Alarm.objects.create(
        environment=production, source=AlarmSource.CLOUDWATCH, name="ServiceDown",
        state=AlarmState.OK, since=bake.started_at, checked_at=bake.started_at,
    )  # fmt: skip

    def transition(alarm, before, after, at):
        return AlarmTransition.objects.create(
            alarm=alarm, environment=production, from_state=before, to_state=after,
            reason=f"{alarm.name} {after}", at=at,
        )  # fmt: skip

    return {
        "before": transition(down, "", AlarmState.OK, bake.started_at - timedelta(minutes=5)),
        "fired": transition(alarm, AlarmState.OK, AlarmState.ALARM,
                            bake.started_at + timedelta(milliseconds=5)),
        "cleared": transition(alarm, AlarmState.ALARM, AlarmState.OK,
                              bake.started_at + timedelta(milliseconds=25)),
        "after": transition(down, AlarmState.OK, AlarmState.ALARM,
                            bake.finished_at + timedelta(minutes=5)),
    }  # fmt: skip
