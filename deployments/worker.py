"""The RQ processes Gantry runs: the worker class (`RQ["WORKER_CLASS"]` in
settings) and the cron scheduler of `manage.py housekeeping`.

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

Redis going away does not stop it either (docs/RELIABILITY.md). Idle, RQ
already retries; but when Redis is unreachable as a job ends, RQ cannot record
the job's result and quits the worker. Here the job's own rows already say
how it ended, so the worker waits for Redis and goes on. RQ's cron
scheduler quits on the first Redis error; HousekeepingScheduler waits too,
for its sweepers are what re-enqueue the jobs an outage lost.
"""

from __future__ import annotations

import time

from django.db import close_old_connections
from django_rq.cron import DjangoCronScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.worker import SimpleWorker

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# Between two attempts to reach Redis, at most: RQ's own back-off doubles up
# to a minute, so an idle worker could notice Redis is back a minute late.
REDIS_RETRY_MAX_SECONDS = 4.0


class DeployWorker(SimpleWorker):
    max_connection_wait_time = REDIS_RETRY_MAX_SECONDS

    def execute_job(self, job, queue) -> None:
        close_old_connections()
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            self.log.warning(
                "Worker %s: Redis went away while job %s ran (%s); its result is not "
                "recorded in RQ. Waiting for Redis.", self.name, job.id, exc,
            )  # fmt: skip
            self.wait_for_redis()
        finally:
            close_old_connections()

    def wait_for_redis(self) -> None:
        """Return once Redis answers again (or a stop was requested)."""
        delay = 0.5
        while not self._stop_requested:
            try:
                self.connection.ping()
                self.log.info("Worker %s: Redis answers again", self.name)
                return
            except REDIS_DOWN:
                time.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_MAX_SECONDS)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        # A Redis restarted without its data forgot this worker: register it
        # again, so `rq info` and the dashboards list it.
        if pipeline is None and not self.connection.exists(self.key):
            self.register_birth()
        super().heartbeat(timeout, pipeline)


class HousekeepingScheduler(DjangoCronScheduler):
    """RQ's cron scheduler, kept running while Redis is unreachable: what is
    due is enqueued once Redis answers again (a missed run is not repeated,
    as with RQ's own scheduler when it was down)."""

    _retry_delay = 0.5

    def _redis_down(self, exc: Exception) -> None:
        self.log.warning("CronScheduler %s: Redis unreachable (%s); retrying", self.name, exc)
        time.sleep(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, REDIS_RETRY_MAX_SECONDS)

    def enqueue_jobs(self) -> list:
        try:
            enqueued = super().enqueue_jobs()
        except REDIS_DOWN as exc:
            # The job that failed keeps its old enqueue time: it is due again next time.
            self._redis_down(exc)
            return []
        self._retry_delay = 0.5
        return enqueued

    def save(self, pipeline=None) -> None:
        try:
            super().save(pipeline)
        except REDIS_DOWN as exc:
            self._redis_down(exc)

    def heartbeat(self) -> None:
        # Re-creates the scheduler's registration when Redis lost it (RQ's own).
        try:
            super().heartbeat()
        except REDIS_DOWN as exc:
            self._redis_down(exc)

    def register_death(self, pipeline=None) -> None:
        try:
            super().register_death(pipeline)
        except REDIS_DOWN:  # stopping anyway; Redis expires the registration itself
            pass
