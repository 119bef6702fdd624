"""Periodic jobs, run by `manage.py housekeeping deployments.cron` (RQ's cron
scheduler, kept running through Redis outages: deployments/worker.py)."""

from django.conf import settings
from rq import cron

from deployments.drift import sweep_drift
from deployments.jobs import (
    expire_stale_requests,
    fail_stalled_deployments,
    wake_waiting_deployments,
)
from environments.alarms import poll_alarms
from environments.costs import fetch_costs
from portal.core.jobs import verify_audit_chain

# Housekeeping goes to `low`, but for the two jobs that keep deployments
# moving: a stalled run holds its environment until it is failed (`high`,
# before waiting deploys), and waking waiting requests plans and starts them
# (`default`). Every 15 s: a job lost with Redis is enqueued again well within
# a minute of Redis being back.
cron.register(fail_stalled_deployments, "high", interval=10)
cron.register(wake_waiting_deployments, "default", interval=15)
cron.register(expire_stale_requests, "low", interval=60)
# The audit chain is walked whole (~160k events/s); every 10 minutes bounds how
# long a tampered event goes unnoticed.
cron.register(verify_audit_chain, "low", interval=600)
# Cost Explorer has most of yesterday's spend some hours after midnight UTC;
# one fetch a day is enough, and each request is billed.
cron.register(fetch_costs, "low", cron="15 6 * * *")
# Alarm states reach the dashboard within ~30 s. A run not started within a
# minute is dropped (the next one reads the same sources); runs that overlap
# are harmless: transitions are settled by conditional UPDATEs.
cron.register(poll_alarms, "low", interval=30, ttl=60, job_timeout=300)
# Drift: every environment's running images against what Gantry deployed;
# Terraform plans follow as one job per environment (deployments/drift.py).
cron.register(sweep_drift, "low", interval=settings.DRIFT_CHECK_SECONDS, ttl=60, job_timeout=600)
