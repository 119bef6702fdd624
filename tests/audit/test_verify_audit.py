"""`manage.py verify_audit` and the database's refusal to edit the trail.

The tamper tests edit the table the way an attacker with database access
would: triggers disabled, rows changed, triggers enabled again. They run with
one process and with two (`--workers 2`); worker processes have connections of
their own and see only committed rows, so those tests commit (transaction=True)
and the tables are flushed afterwards. The others run inside the test's
transaction and are rolled back with it.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from portal.core.audit import canonical, sign
from portal.core.models import AuditEvent

# "1": the sequential walk; "2": two worker processes (the tests check they ran).
WORKERS = pytest.mark.parametrize("workers", ["1", "2"])
committed = pytest.mark.django_db(transaction=True)


def verify(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def requested_event(trail) -> AuditEvent:
    return AuditEvent.objects.get(
        action="deployment.requested", target_id=str(trail["deployment"].pk)
    )


def behind_the_triggers_back(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER USER")


def processes_used(workers: str) -> str:
    """Run once more at verbosity 2, which says how many processes read the trail."""
    _, out, _ = verify("--workers", workers, "--verbosity", "2")
    return out.splitlines()[0]


def test_it_reports_an_intact_chain(trail):
    last = AuditEvent.objects.order_by("-seq").first()
    code, out, err = verify()
    assert code == 0, err
    count = AuditEvent.objects.count()
    expected = f"audit chain intact: {count} events, last #{last.seq} at {last.at.isoformat()}"
    assert out.strip() == expected


@committed
@WORKERS
def test_it_reports_an_intact_chain_with_workers(trail, workers):
    last = AuditEvent.objects.order_by("-seq").first()
    code, out, err = verify("--workers", workers)
    assert code == 0, err
    count = AuditEvent.objects.count()
    expected = f"audit chain intact: {count} events, last #{last.seq} at {last.at.isoformat()}"
    assert out.strip() == expected
    assert processes_used(workers) == f"read by {workers} process(es)"


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_it_refuses_fewer_than_one_worker(db, workers):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=f"--workers must be at least 1 \\(got {workers}\\)"):
        call_command("verify_audit", "--workers", workers)


def test_it_walks_sequentially_inside_a_transaction(trail):
    """Here the test's transaction is open: workers could not see its events."""
    assert processes_used("2") == "read by 1 process(es)"


def test_it_reports_an_empty_chain_as_intact(db):
    assert verify() == (0, "audit chain intact: 0 events\n", "")


def test_it_verifies_with_a_key_file(trail, tmp_path, settings):
    good = tmp_path / "audit.key"
    good.write_bytes(settings.AUDIT_KEY + b"\n")
    assert verify("--key-file", str(good))[0] == 0
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"not-the-key")
    code, _, err = verify("--key-file", str(wrong))
    assert code == 1
    assert "event #1 does not match its signature" in err


def test_it_names_an_unreadable_key_file(db, tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="missing.key"):
        call_command("verify_audit", "--key-file", str(tmp_path / "missing.key"))


@pytest.mark.parametrize("statement", ["UPDATE portal_auditevent SET action = 'x'",
                                       "DELETE FROM portal_auditevent"])  # fmt: skip
def test_the_database_refuses_to_change_the_trail(trail, statement):
    before = list(AuditEvent.objects.order_by("seq").values_list("seq", "action", "hash"))
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "action", "hash")) == before


@committed
@WORKERS
def test_it_finds_an_event_edited_behind_the_triggers_back(trail, workers):
    target = requested_event(trail)
    behind_the_triggers_back(
        'UPDATE portal_auditevent SET after = after || \'{"reason": "routine"}\' WHERE seq = %s',
        [target.seq],
    )
    code, out, err = verify("--workers", workers)
    assert code == 1
    assert out == ""
    assert f"BROKEN at event #{target.seq}" in err
    assert "does not match its signature" in err
    assert processes_used(workers) == f"read by {workers} process(es)"


@committed
@WORKERS
def test_it_finds_a_deleted_event(trail, workers):
    target = requested_event(trail)
    behind_the_triggers_back("DELETE FROM portal_auditevent WHERE seq = %s", [target.seq])
    code, _, err = verify("--workers", workers)
    assert code == 1
    assert f"event #{target.seq} is missing" in err
    assert processes_used(workers) == f"read by {workers} process(es)"


@committed
@WORKERS
def test_it_finds_a_chain_rebuilt_without_the_key(trail, workers):
    """An attacker deletes an event and re-chains everything after it with a
    guessed key: every link holds, but no signature does."""
    target = requested_event(trail)
    behind_the_triggers_back("DELETE FROM portal_auditevent WHERE seq = %s", [target.seq])
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER USER")
        prev_hash = "0" * 64
        for new_seq, event in enumerate(AuditEvent.objects.order_by("seq"), start=1):
            content = canonical(
                new_seq, event.at, event.actor_id, event.actor_name, event.action,
                event.target_type, event.target_id, event.target_repr, event.application_id,
                event.environment_id, event.before, event.after, event.ip, event.request_id,
                prev_hash,
            )  # fmt: skip
            forged = sign(content, key=b"guess")
            cursor.execute(
                "UPDATE portal_auditevent SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [new_seq, prev_hash, forged, event.pk],
            )
            prev_hash = forged
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER USER")
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))  # no gap left to see
    code, _, err = verify("--workers", workers)
    assert code == 1
    assert "BROKEN at event #1: event #1 does not match its signature" in err
    assert processes_used(workers) == f"read by {workers} process(es)"
