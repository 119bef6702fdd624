"""RQ jobs of the deployments app. Each takes primary keys (or nothing), loads
its rows, and is safe to run twice."""

from __future__ import annotations

import logging

from django.utils import timezone

from deployments.choices import Status

log = logging.getLogger(__name__)


def expire_stale_requests() -> int:
    """Housekeeping (low queue, every minute): expire requests whose approval
    window has passed, so an old approval can never release a stale change."""
    from deployments.models import Deployment

    expired = 0
    candidates = Deployment.objects.filter(status=Status.AWAITING_APPROVAL).select_related(
        "environment"
    )
    now = timezone.now()
    for deployment in candidates.iterator():
        if now >= deployment.expires_at and deployment.expire():
            expired += 1
    if expired:
        log.info("expired %d deployment request(s)", expired)
    return expired
