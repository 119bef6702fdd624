"""The four-eyes rules on the Deployment model, including real concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import Prefetch
from django.test.utils import CaptureQueriesContext

from deployments.choices import Decision, Status
from deployments.models import Approval, Artifact, Deployment, Release
from portal.core.models import AuditEvent
from portal.core.roles import Conflict, Forbidden, PolicyError
from tests.conftest import env, grant


def request(release, users, slug="staging", who="alice"):
    return Deployment.request(release, env(release.application, slug), users[who], "hotfix")


def test_it_waits_for_approval_and_queues_on_the_nth(release, users):
    deployment = request(release, users)
    assert deployment.status == Status.AWAITING_APPROVAL
    deployment.approve(users["bob"], "looks right")
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions[-3:] == ["deployment.requested", "deployment.approved", "deployment.queued"]


def test_it_queues_at_once_without_required_approvals(release, users):
    deployment = request(release, users, slug="dev")
    assert deployment.status == Status.QUEUED


def test_it_refuses_self_approval(release, users, catalog):
    grant(users["alice"], env(catalog, "staging"), "approver")
    deployment = request(release, users)
    with pytest.raises(Forbidden, match="someone else"):
        deployment.approve(users["alice"])
    assert not Approval.objects.exists()


def test_the_database_refuses_a_requester_approval_written_directly(release, users):
    deployment = request(release, users)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(deployment=deployment, user=users["alice"], decision="approve",
                                digest="x")  # fmt: skip


def test_it_counts_one_person_once(release, users, catalog):
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    deployment = request(release, users, slug="production")
    deployment.approve(users["bob"])
    with pytest.raises(Conflict):
        deployment.approve(users["bob"])
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL
    deployment.approve(users["carol"])
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED


def test_it_refuses_viewers_and_outsiders(release, users):
    deployment = request(release, users)
    for name in ("dave", "mallory"):
        with pytest.raises(Forbidden):
            deployment.approve(users[name])


def test_a_rejection_ends_the_request(release, users):
    deployment = request(release, users)
    deployment.reject(users["bob"], "wrong build")
    deployment.refresh_from_db()
    assert deployment.status == Status.REJECTED
    with pytest.raises(Conflict):
        deployment.approve(users["carol"])


def test_approvals_are_void_when_what_ships_changes(release, users, catalog):
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    deployment = request(release, users, slug="production")
    deployment.approve(users["bob"])
    # The engine records a new Terraform plan: bob's approval no longer matches.
    Deployment.objects.filter(pk=deployment.pk).update(plan_sha256="b" * 64)
    deployment.refresh_from_db()
    assert deployment.valid_approvals().count() == 0
    deployment.approve(users["carol"])
    deployment.refresh_from_db()
    assert deployment.status == Status.AWAITING_APPROVAL


def test_production_needs_success_in_staging_first(release, users):
    with pytest.raises(PolicyError, match="must first succeed in staging"):
        request(release, users, slug="production")


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_approvals_transition_exactly_once(catalog, users):
    """bob and carol approve at the same instant from separate connections."""
    from deployments.models import Release
    from tests.conftest import image

    release = Release.register(
        catalog, "2.0.0", {s: image(s) for s in ("fraud-api", "fraud-ml", "fraud-worker")},
        users["alice"],
    )  # fmt: skip
    production = env(catalog, "production")
    production.require_previous_success = False
    production.save()
    for attempt in range(5):
        deployment = Deployment.request(release, production, users["alice"], f"try {attempt}")
        barrier = threading.Barrier(2)
        errors: list[Exception] = []

        def approve(name: str, pk=deployment.pk, barrier=barrier, errors=errors) -> None:
            try:
                barrier.wait()
                Deployment.objects.get(pk=pk).approve(users[name])
            except Exception as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=approve, args=(n,)) for n in ("bob", "carol")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        deployment.refresh_from_db()
        assert deployment.status == Status.QUEUED
        assert deployment.approvals.count() == 2
        queued = AuditEvent.objects.filter(
            action="deployment.queued", target_id=str(deployment.pk)
        ).count()
        assert queued == 1
        deployment.cancel(users["alice"])
    assert connection.vendor == "postgresql"


def test_a_rollback_may_only_bring_back_a_release_that_ran_there(release, users, catalog):
    with pytest.raises(PolicyError, match="never succeeded in staging"):
        Deployment.request(
            release, env(catalog, "staging"), users["alice"], "undo", kind="rollback"
        )


def test_an_approval_counts_only_for_exactly_what_ships():
    """The one rule behind the deployment page's "still valid" and the evidence
    pack's "bound to what shipped" (Deployment.valid_approvals is its query)."""
    assert Approval(decision=Decision.APPROVE, digest="a" * 64).counts_for("a" * 64)
    assert not Approval(decision=Decision.APPROVE, digest="a" * 64).counts_for("b" * 64)
    assert not Approval(decision=Decision.REJECT, digest="a" * 64).counts_for("a" * 64)


def test_what_ships_is_read_in_one_query_however_many_services(release, users):
    """The approval digest reads the release's images on every decision: one
    query for three services (it was one per service), none once prefetched."""
    expected = {a.service.slug: a.image_ref for a in release.artifacts.select_related("service")}
    fresh = Release.objects.get(pk=release.pk)
    with CaptureQueriesContext(connection) as queries:
        assert fresh.artifact_map() == expected
    assert len(queries) == 1
    prefetched = Release.objects.prefetch_related(
        Prefetch("artifacts", queryset=Artifact.objects.select_related("service"))
    ).get(pk=release.pk)
    with CaptureQueriesContext(connection) as queries:
        assert prefetched.artifact_map() == expected
    assert len(queries) == 0
    assert list(expected) == sorted(expected) and len(expected) == 3


def test_an_approval_reads_what_ships_once(release, users):
    """One approval computes the digest three times (to bind the approval, to
    count the valid ones, for the audit event): the images are read once."""
    deployment = Deployment.objects.get(pk=request(release, users).pk)
    with CaptureQueriesContext(connection) as queries:
        deployment.approve(users["bob"], "looks right")
    artifact_reads = [q for q in queries.captured_queries if '"deployments_artifact"' in q["sql"]]
    assert len(artifact_reads) == 1
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED
    event = AuditEvent.objects.get(action="deployment.approved", target_id=str(deployment.pk))
    assert event.after["artifacts"] == release.artifact_map()
    assert event.after["digest"] == deployment.approval_digest()
