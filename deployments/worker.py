"""The RQ worker class Gantry runs (`RQ["WORKER_CLASS"]` in settings).

RQ's default worker forks a work horse per job. On the two-core machines
measured in docs/PERFORMANCE.md that fork and the horse's set-up took ~140 ms
of the time between an approval and the deployment's first log line, so jobs
run in the worker process itself. What that gives up, and why it is safe here:
- Isolation between jobs: each job closes its database connections before and
  after it runs (a connection broken during one job never reaches the next),
  and jobs keep no module-level state.
- Surviving a job that kills the interpreter: the worker dies with it; its
  supervisor (docker-compose's `restart: unless-stopped`) starts a new one and
  the stalled-run cron fails the deployment whose heartbeat stopped, exactly
  as when a forking worker is killed with SIGKILL.
"""

from __future__ import annotations

from django.db import close_old_connections
from rq.worker import SimpleWorker


class DeployWorker(SimpleWorker):
    def execute_job(self, job, queue) -> None:
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()
