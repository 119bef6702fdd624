"""Periodic jobs, run by `manage.py rqcron deployments.cron` (RQ's cron scheduler)."""

from rq import cron

from deployments.jobs import (
    expire_stale_requests,
    fail_stalled_deployments,
    wake_queued_deployments,
)

cron.register(fail_stalled_deployments, "high", interval=10)
cron.register(wake_queued_deployments, "default", interval=30)
cron.register(expire_stale_requests, "low", interval=60)
