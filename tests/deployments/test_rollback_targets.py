"""Rollback deploys a known-good release, right on every click: the default
target, rolling back twice, after a failed deploy, a chosen target, history
Gantry did not make, and the promotion rule. Real RQ jobs on Redis (an
in-process burst worker), a moto server's ECS, the ecs_rolling runner."""

from __future__ import annotations

import socket

import boto3
import pytest
from django.urls import reverse

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from deployments.rollback import default_target, request_rollback
from environments.models import Step
from portal.core.models import AuditEvent
from portal.core.roles import PolicyError
from tests.api.conftest import api  # noqa: F401
from tests.conftest import env, image, work
from tests.runners.conftest import demo_aws, moto_endpoint  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


@pytest.fixture
def dev(catalog, demo_aws, monkeypatch, moto_endpoint, settings, tmp_path):
    """fraud-detector dev (no approvals) rolling fraud-api and fraud-ml on ECS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    dev = env(catalog, "dev")
    Step.objects.create(environment=dev, order=1, name="ECS", kind="ecs_rolling", config={
        "cluster": demo_aws["cluster"], "services": ["fraud-api", "fraud-ml"],
        "timeout_seconds": 60, "poll_seconds": 0.1,
    })  # fmt: skip
    return dev


def running_image(endpoint: str, cluster: str, service: str = "fraud-api") -> str:
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="ca-central-1")
    arn = ecs.describe_services(cluster=cluster, services=[service])["services"][0][
        "taskDefinition"
    ]
    found = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return found["containerDefinitions"][0]["image"]


def register(catalog, users, version: str, char: str) -> Release:
    return Release.register(catalog, version, {s: image(s, char) for s in SERVICES}, users["alice"])


def ship(release: Release, environment, users, queues) -> Deployment:
    deployment = Deployment.request(release, environment, users["alice"], f"ship {release}")
    work(queues)
    deployment.refresh_from_db()
    return deployment


def roll_back(environment, users, queues, **chosen) -> Deployment:
    rollback = request_rollback(environment, users["alice"], "it misbehaves", **chosen)
    work(queues)
    rollback.refresh_from_db()
    return rollback


def test_rolling_back_again_goes_further_back_and_never_forward(
    dev, catalog, users, queues, demo_aws, moto_endpoint
):
    r1, r2, r3 = (register(catalog, users, v, c) for v, c in (("1.1", "1"), ("1.2", "2"),
                                                             ("1.3", "3")))  # fmt: skip
    shipped = {r: ship(r, dev, users, queues) for r in (r1, r2, r3)}
    assert all(d.status == Status.SUCCEEDED for d in shipped.values())

    first = roll_back(dev, users, queues)
    assert (first.release, first.status, first.error) == (r2, Status.SUCCEEDED, "")
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "2")
    second = roll_back(dev, users, queues)  # undoes a rollback: this crashed before
    assert (second.release, second.status, second.error) == (r1, Status.SUCCEEDED, "")
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "1")

    with pytest.raises(PolicyError, match="nothing to roll back to"):
        request_rollback(dev, users["alice"], "and again")
    shipped[r3].refresh_from_db()
    shipped[r2].refresh_from_db()
    assert shipped[r3].rolled_back_by == first and shipped[r2].rolled_back_by == second
    assert shipped[r1].rolled_back_at is None
    marks = AuditEvent.objects.filter(action="release.rolled_back").order_by("seq")
    assert [e.after["release"] for e in marks] == ["1.3", "1.2"]


def test_a_second_rollback_with_nothing_earlier_is_refused_not_sent_forward(
    dev, catalog, users, queues, demo_aws, moto_endpoint, client
):
    """The crash of the issue: R1, R2, roll back (→ R1), roll back again."""
    r1, r2 = register(catalog, users, "1.1", "1"), register(catalog, users, "1.2", "2")
    ship(r1, dev, users, queues), ship(r2, dev, users, queues)
    assert roll_back(dev, users, queues).status == Status.SUCCEEDED
    client.force_login(users["alice"])

    page = client.get(reverse("environment-rollback", args=["fraud-detector", "dev"]))
    response = client.post(
        reverse("environment-rollback", args=["fraud-detector", "dev"]), {"reason": "again"}
    )

    assert "nothing to roll back to" in page.content.decode()
    assert response.status_code == 400
    assert not Deployment.objects.filter(kind=Kind.ROLLBACK, release=r2).exists()
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "1")


def test_a_rollback_after_a_failed_deploy_restores_what_ran_before(
    dev, catalog, users, queues, demo_aws, moto_endpoint
):
    r1, r2 = register(catalog, users, "1.1", "1"), register(catalog, users, "1.2", "2")
    assert ship(r1, dev, users, queues).status == Status.SUCCEEDED
    with socket.socket() as probe:  # nothing listens there: the health check fails
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/health"
    Step.objects.create(environment=dev, order=2, name="Health", kind="http_check",
                        config={"urls": [closed], "timeout_seconds": 0.5,
                                "interval_seconds": 0.1})  # fmt: skip
    failed = ship(r2, dev, users, queues)
    assert failed.status == Status.FAILED
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "2")
    Step.objects.filter(environment=dev, order=2).delete()

    target, undo = default_target(dev)
    rollback = roll_back(dev, users, queues)

    assert (target, undo) == (r1, failed)
    assert (rollback.release, rollback.status) == (r1, Status.SUCCEEDED), rollback.error
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "1")
    failed.refresh_from_db()
    assert failed.rolled_back_by == rollback


def test_a_chosen_release_is_brought_back_and_bad_choices_are_refused(
    dev, catalog, users, queues, demo_aws, moto_endpoint, api
):
    r1, r2, r3 = (register(catalog, users, v, c) for v, c in (("1.1", "1"), ("1.2", "2"),
                                                             ("1.3", "3")))  # fmt: skip
    for release in (r1, r2, r3):
        ship(release, dev, users, queues)
    never = register(catalog, users, "1.4", "4")
    url = reverse("api-environment-rollback", args=[dev.pk])
    alice = api("alice")

    refused = [alice.post(url, {"reason": "x", "release": pk}, format="json")
               for pk in (never.pk, r3.pk)]  # fmt: skip
    chosen = alice.post(url, {"reason": "straight back to 1.1", "release": r1.pk}, format="json")

    assert [r.status_code for r in refused] == [400, 400]
    assert "never succeeded" in refused[0].json()["detail"]
    assert "runs in" in refused[1].json()["detail"]
    assert chosen.status_code == 201 and chosen.json()["release"]["version"] == "1.1"
    work(queues)
    assert Deployment.objects.get(pk=chosen.json()["id"]).status == Status.SUCCEEDED
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "1")


def test_history_gantry_did_not_make_rolls_back_to_the_targets_images(
    dev, catalog, users, queues, demo_aws, moto_endpoint
):
    """Seeded or imported rows carry no step outputs: the target's images go out."""
    from django.utils import timezone

    old = register(catalog, users, "1.0", "9")
    Deployment.objects.create(release=old, environment=dev, requested_by=users["alice"],
                              reason="imported", status=Status.SUCCEEDED,
                              finished_at=timezone.now())  # fmt: skip
    assert ship(register(catalog, users, "1.1", "1"), dev, users, queues).status == "succeeded"

    rollback = roll_back(dev, users, queues)

    assert (rollback.release, rollback.status) == (old, Status.SUCCEEDED), rollback.error
    assert running_image(moto_endpoint, demo_aws["cluster"]) == image("fraud-api", "9")
    assert running_image(moto_endpoint, demo_aws["cluster"], "fraud-ml") == image("fraud-ml", "9")


def test_a_release_rolled_back_from_staging_may_not_go_to_production(
    catalog, users, queues, settings, tmp_path
):
    settings.DEPLOY_WORKDIR = str(tmp_path)
    staging, production = env(catalog, "staging"), env(catalog, "production")
    staging.required_approvals = staging.rollback_required_approvals = 0
    staging.save()
    r1, r2 = register(catalog, users, "1.6.0", "6"), register(catalog, users, "1.7.0", "7")
    ship(r1, staging, users, queues)
    bad = ship(r2, staging, users, queues)
    roll_back(staging, users, queues)

    with pytest.raises(PolicyError, match="1.7.0 was rolled back from staging"):
        Deployment.request(r2, production, users["alice"], "promote 1.7.0")
    again = ship(r2, staging, users, queues)  # deployed forward deliberately
    request = Deployment.request(r2, production, users["alice"], "promote 1.7.0")

    assert bad.pk != again.pk and request.promoted_from == again
    requested = AuditEvent.objects.get(action="deployment.requested", target_id=str(request.pk))
    assert requested.after["promoted_from"] == again.pk
