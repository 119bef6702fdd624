"""portal.core.jobs.verify_audit_chain: the scheduled walk of the audit chain, its
stored verdict, the alert on a break, and the status on the audit page."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from deployments.choices import NotificationEvent
from deployments.models import Deployment, Notification
from portal.core.jobs import verify_audit_chain
from portal.core.models import AuditEvent, ChainVerification
from tests.conftest import env
from tests.environments.ui import browser


@pytest.fixture
def trail(release, users) -> Deployment:
    """A release and a deployment request: a few events in the chain."""
    return Deployment.request(release, env(release.application, "staging"), users["alice"], "fix")


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")


def tamper(seq: int) -> None:
    # As an attacker with database access would: past the append-only triggers.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER USER")
        cursor.execute("UPDATE portal_auditevent SET actor_name = 'mallory' WHERE seq = %s", [seq])
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER USER")


def chain_alerts():
    return Notification.objects.filter(event=NotificationEvent.CHAIN_BROKEN)


def test_it_stores_verified_through_the_last_event(trail, root):
    last = AuditEvent.objects.order_by("-seq").first()
    assert verify_audit_chain() == f"verified through #{last.seq}"
    verification = ChainVerification.objects.get()
    assert verification.ok is True
    assert verification.events_checked == AuditEvent.objects.count()
    assert verification.verified_through_seq == last.seq
    assert verification.verified_through_at == last.at
    assert verification.broken_seq is None
    assert verification.finished_at >= verification.started_at
    assert not chain_alerts().exists()


def test_a_tampered_chain_is_stored_broken_and_alerted_once(trail, root, caplog):
    requested = AuditEvent.objects.get(action="deployment.requested")
    tamper(requested.seq)
    with caplog.at_level(logging.ERROR, logger="portal.core.jobs"):
        assert verify_audit_chain() == f"broken at #{requested.seq}"
    verification = ChainVerification.objects.get()
    assert verification.ok is False
    assert verification.broken_seq == requested.seq
    assert verification.verified_through_seq == requested.seq - 1
    assert verification.events_checked == requested.seq - 1
    assert verification.reason == (
        f"event #{requested.seq} does not match its signature (edited or re-signed)"
    )
    assert f"audit chain broken at event #{requested.seq}" in caplog.text
    alert = chain_alerts().get()
    assert alert.environment is None
    assert alert.recipients == ["root@example.com"]  # superusers only
    assert alert.subject == f"Audit chain broken at event #{requested.seq}"
    assert verification.reason in alert.body

    # The same break found again: stored, not alerted again.
    assert verify_audit_chain() == f"broken at #{requested.seq}"
    assert ChainVerification.objects.filter(ok=False).count() == 2
    assert chain_alerts().count() == 1


def test_a_different_break_is_alerted_again(trail, root):
    first, second = AuditEvent.objects.order_by("seq")[:2]
    tamper(second.seq)
    verify_audit_chain()
    tamper(first.seq)
    verify_audit_chain()
    assert list(chain_alerts().order_by("created_at").values_list("subject", flat=True)) == [
        f"Audit chain broken at event #{second.seq}",
        f"Audit chain broken at event #{first.seq}",
    ]


def test_the_audit_page_shows_the_verified_status(trail, root, users):
    page = browser(users["dave"]).get(reverse("audit")).content.decode()
    assert "The chain has not been verified yet" in page
    verify_audit_chain()
    verification = ChainVerification.objects.get()
    page = browser(users["dave"]).get(reverse("audit")).content.decode()
    assert f"Chain verified through event {verification.verified_through_seq} at " in page
    assert "BROKEN" not in page


def test_the_audit_page_names_the_broken_event(trail, root, users):
    requested = AuditEvent.objects.get(action="deployment.requested")
    tamper(requested.seq)
    verify_audit_chain()
    page = browser(users["dave"]).get(reverse("audit")).content.decode()
    assert f"Audit chain BROKEN at event {requested.seq}:" in page
    assert 'class="alert alert-error chain-status"' in page


def test_it_is_scheduled_every_ten_minutes_on_the_low_queue():
    from django_rq import get_connection
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=get_connection("low"))
    scheduler.load_config_from_file("deployments.cron")
    job = next(j for j in scheduler.get_jobs() if j.func is verify_audit_chain)
    assert (job.queue_name, job.interval, job.cron) == ("low", 600, None)


def test_verify_audit_can_record_its_verdict(trail, root):
    import io

    from django.core.management import call_command

    call_command("verify_audit", "--workers", "1", stdout=io.StringIO())
    assert not ChainVerification.objects.exists()  # without --record nothing is stored
    call_command("verify_audit", "--workers", "1", "--record", stdout=io.StringIO())
    verification = ChainVerification.objects.get()
    assert verification.ok is True
    assert verification.verified_through_seq == AuditEvent.objects.order_by("-seq").first().seq
