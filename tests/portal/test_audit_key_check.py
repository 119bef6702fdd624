"""The audit writer refuses to extend a chain signed with another key.

The chain's key is kept as a fingerprint (an HMAC of a fixed label under the
key, never the key); a process compares it before its first append. A chain
without one is checked against the signature of its last event.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from portal.core import audit
from portal.core.audit_chain import verify_chain
from portal.core.models import AuditChainKey, AuditEvent

OTHER_KEY = b"a-key-this-chain-never-saw"


@pytest.fixture(autouse=True)
def _check_every_time():
    """Each test starts as a fresh process would: its key not yet checked."""
    audit.forget_checked_key()
    yield
    audit.forget_checked_key()


def append(n: int = 1) -> None:
    for i in range(n):
        audit.record("test.appended", ("test.thing", i, f"thing {i}"), after={"n": i})


def test_it_records_the_fingerprint_with_the_first_event(db, settings):
    append()
    stored = AuditChainKey.objects.get()
    assert stored.fingerprint == audit.key_fingerprint(settings.AUDIT_KEY)
    assert stored.first_seq == 1
    # A fingerprint, not the key: neither it nor its hex form is stored.
    assert settings.AUDIT_KEY.decode() not in stored.fingerprint
    assert settings.AUDIT_KEY.hex() not in stored.fingerprint
    assert audit.key_fingerprint(OTHER_KEY) != stored.fingerprint


def test_it_refuses_another_key_naming_the_problem(db, settings):
    append(3)
    audit.forget_checked_key()
    settings.AUDIT_KEY = OTHER_KEY
    with pytest.raises(audit.AuditKeyMismatch, match="AUDIT_KEY is not the key this chain"):
        append()
    assert AuditEvent.objects.count() == 3
    settings.AUDIT_KEY = b"test-audit-key-not-for-production"
    assert verify_chain(key=settings.AUDIT_KEY).ok


def test_it_names_debugs_development_key(db, settings):
    append()
    audit.forget_checked_key()
    settings.AUDIT_KEY, settings.AUDIT_KEY_IS_DEVELOPMENT_KEY = b"dev-only-audit-key", True
    with pytest.raises(audit.AuditKeyMismatch, match="DEBUG's fixed development key"):
        append()
    assert AuditEvent.objects.count() == 1


def test_it_checks_a_chain_without_fingerprint_against_its_last_event(db, settings):
    append(2)
    AuditChainKey.objects.all().delete()  # a chain made before fingerprints existed
    audit.forget_checked_key()
    settings.AUDIT_KEY = OTHER_KEY
    with pytest.raises(audit.AuditKeyMismatch, match="signature of event #2"):
        append()
    assert not AuditChainKey.objects.exists()
    # The chain's own key passes, and the chain is given its fingerprint.
    settings.AUDIT_KEY = b"test-audit-key-not-for-production"
    append()
    assert AuditChainKey.objects.get().first_seq == 3
    assert verify_chain(key=settings.AUDIT_KEY).ok


def test_it_checks_once_per_process(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        append()  # committed: the fingerprint is the chain's now
    with CaptureQueriesContext(connection) as queries:
        append()
    assert not [q for q in queries.captured_queries if "portal_auditchainkey" in q["sql"]]


def test_a_rolled_back_first_event_leaves_the_check_to_the_next_append(db, settings):
    with pytest.raises(RuntimeError), transaction.atomic():
        append()
        raise RuntimeError("the change failed")
    assert not AuditChainKey.objects.exists()
    settings.AUDIT_KEY = OTHER_KEY  # a chain started afresh may take any key...
    append()
    assert AuditChainKey.objects.get().fingerprint == audit.key_fingerprint(OTHER_KEY)
