"""RQ jobs of the portal: the scheduled walk of the audit chain.

verify_audit_chain runs from deployments/cron.py every ten minutes on the
`low` queue. Each run stores its verdict as a ChainVerification row, which the
audit page and the evidence packs show; a break is announced to the
superusers once, however many runs find the same one again.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from portal.core.audit_chain import ChainCheck, verify_chain
from portal.core.models import ChainVerification
from portal.core.signals import announcement

log = logging.getLogger(__name__)

# Arbitrary constant naming the advisory lock that lets one verify run at a time,
# so two overlapping runs cannot both decide that a break is new.
_VERIFY_LOCK_ID = 0x76657269


def _lock_verification() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_VERIFY_LOCK_ID])


def _announce_break(verification: ChainVerification) -> None:
    subject = f"Audit chain broken at event #{verification.broken_seq}"
    body = (
        f"{subject}: {verification.reason}.\n"
        f"{verification.events_checked} events verified before it "
        f"(check started {verification.started_at:%Y-%m-%d %H:%M:%S %Z}).\n"
        "Run `manage.py verify_audit` and compare the trail with its last export.\n"
    )
    announcement.send(__name__, environment=None, event="chain_broken", subject=subject, body=body)


def verify_audit_chain() -> str:
    """Walk the whole chain, store the verdict, and alert on a break not seen before."""
    started = timezone.now()
    check = verify_chain()
    store_verdict(check, started)
    return f"verified through #{check.last_seq}" if check.ok else f"broken at #{check.broken_seq}"


def store_verdict(check: ChainCheck, started: datetime) -> ChainVerification:
    """Store a walk's verdict (the job's, or `verify_audit --record`'s); alert on a new break."""
    with transaction.atomic():
        _lock_verification()
        seen_before = (
            not check.ok
            and ChainVerification.objects.filter(
                ok=False, broken_seq=check.broken_seq, reason=check.reason
            ).exists()
        )
        verification = ChainVerification.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            ok=check.ok,
            events_checked=check.checked,
            verified_through_seq=check.last_seq,
            verified_through_at=check.last_at,
            broken_seq=check.broken_seq,
            reason=check.reason,
        )
        if check.ok:
            return verification
        log.error(
            "audit chain broken at event #%s: %s (%s events verified before it)",
            check.broken_seq, check.reason, check.checked,
        )  # fmt: skip
        if not seen_before:
            _announce_break(verification)
    return verification
