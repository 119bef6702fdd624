"""Periodic jobs, run by `manage.py rqcron deployments.cron` (RQ's cron scheduler)."""

from rq import cron

from deployments.jobs import expire_stale_requests

cron.register(expire_stale_requests, "low", interval=60)
