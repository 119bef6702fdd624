"""The audit chain itself: signing, linking, and appends from many writers at once."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from portal.core import audit, audit_chain
from portal.core.models import AuditEvent


def test_it_links_each_event_to_the_previous_one(db):
    first = audit.record("test.first", ("thing", 1, "one"), after={"n": 1})
    second = audit.record("test.second", ("thing", 2, "two"), before={"n": 1}, after={"n": 2})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == audit.GENESIS_HASH
    assert second.prev_hash == first.hash
    check = audit_chain.verify_chain()
    assert check.ok and check.checked == 2 and check.last_seq == 2


def test_it_verifies_values_as_read_back_from_the_database(db):
    # jsonb reorders keys and IPv6 is normalised by the database: the hash
    # must survive the round trip.
    ctx = audit.AuditContext(ip="2001:DB8:0:0:0:0:0:1", request_id="req-123456789")
    token = audit.set_context(ctx)
    try:
        audit.record("test.json", after={"z": [1, 2.5, "é"], "a": {"nested": None}})
    finally:
        audit.reset_context(token)
    event = AuditEvent.objects.get()
    assert event.ip == "2001:db8::1"
    assert audit_chain.verify_chain().ok


def test_it_fails_with_the_wrong_key(db):
    audit.record("test.one")
    check = audit_chain.verify_chain(key=b"not the key")
    assert not check.ok and check.broken_seq == 1 and "signature" in check.reason


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_fork_the_chain():
    """Eight threads with their own connections append at once."""
    barrier = threading.Barrier(8)
    errors: list[Exception] = []

    def append(worker: int) -> None:
        try:
            barrier.wait()
            for n in range(25):
                audit.record("test.concurrent", ("worker", worker, f"w{worker}"), after={"n": n})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert AuditEvent.objects.count() == 200
    check = audit_chain.verify_chain()
    assert check.ok and check.checked == 200


def test_large_and_integral_floats_survive_the_database_round_trip(db):
    audit.record("test.floats", after={"big": 1e16, "two": 2.0, "small": 1e-7, "half": 0.5})
    assert AuditEvent.objects.get().after == {"big": 10**16, "two": 2, "small": 1e-7, "half": 0.5}
    assert audit_chain.verify_chain().ok
