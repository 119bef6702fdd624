"""Logs and error reports a team can run the portal on: every log record
carries the request id, `LOG_FORMAT=json` writes one JSON object per line,
expected client errors (403, 404) are one line rather than a traceback, and
Sentry (only when SENTRY_DSN is set) never receives a secret.

Imported by the settings (the logging configuration and Sentry start before
the apps are loaded), so nothing here imports a model.
"""

from __future__ import annotations

import json
import logging
import re
from bisect import bisect_left
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings

log = logging.getLogger(__name__)

# The current request's id, for log records; set by RequestContextMiddleware.
request_id_var: ContextVar[str] = ContextVar("log_request_id", default="")

# Attributes every LogRecord has; anything else was passed as `extra`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` ("-" outside a request) for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            # django.request logs a response after the middleware has returned,
            # but hands over the request, which carries its id.
            from_request = getattr(getattr(record, "request", None), "id", "")
            record.request_id = request_id_var.get() or from_request or "-"
        return True


class ExpectedClientErrors(logging.Filter):
    """Django logs a refused request (403, 404, ...) with the exception's
    traceback. It is no fault of ours: keep one line, with the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and status < 500 and record.exc_info:
            reason = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {reason}" if str(reason) else record.getMessage()
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id,
    any `extra` fields, and the traceback as one string when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or request_id_var.get() or None,
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_") and name != "request":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# -- Sentry ----------------------------------------------------------------------

# Headers and cookies that authenticate someone; never sent.
_SECRET_HEADERS = {"authorization", "cookie", "x-csrftoken", "proxy-authorization"}
# Gantry API keys (gty_...), bearer/token credentials and URL passwords in any text.
_SECRET_TEXT = re.compile(
    r"gty_[A-Za-z0-9_\-]{8,}"
    r"|(?i:(?:bearer|token)\s+)[A-Za-z0-9_\-.=]{8,}"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"
)
FILTERED = "[Filtered]"


def scrub_text(text: str) -> str:
    return _SECRET_TEXT.sub(FILTERED, text)


def _scrub_values(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_values(item) for item in value]
    return value


def scrub_event(event: dict, hint: dict | None = None) -> dict:
    """Sentry's before_send: the request's credentials, body and cookies go;
    API keys, bearer tokens and URL passwords are cut out of every text."""
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers") or {}
        request["headers"] = {
            name: FILTERED if name.lower() in _SECRET_HEADERS else value
            for name, value in headers.items()
        }
        request.pop("cookies", None)
        request.pop("data", None)  # request bodies may carry keys, plans, secret variables
        if request.get("query_string"):
            request["query_string"] = scrub_text(str(request["query_string"]))
    for frame_list in _frame_lists(event):
        for frame in frame_list:
            frame.pop("vars", None)  # local variables: keys live in them
    return _scrub_values(event)


def _frame_lists(event: dict):
    for exception in (event.get("exception") or {}).get("values") or []:
        yield (exception.get("stacktrace") or {}).get("frames") or []
    for thread in (event.get("threads") or {}).get("values") or []:
        yield (thread.get("stacktrace") or {}).get("frames") or []


def scrub_breadcrumb(crumb: dict, hint: dict | None = None) -> dict:
    return _scrub_values(crumb)


def init_sentry(dsn: str, environment: str, release: str) -> None:
    """Report unhandled errors to Sentry; called by the settings only when SENTRY_DSN is set."""
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=release or None,
        integrations=[DjangoIntegration()],
        send_default_pii=False,  # no user names, IPs, cookies
        include_local_variables=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, "audit_key", "key_hash", "client_secret", "dsn"],
            recursive=True,
        ),
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=0,
    )


# -- histograms shared by every process ------------------------------------------


class SharedHistogram:
    """A Prometheus histogram whose counts live in Redis, so that what every
    worker observes adds up in one place and any web replica serves the same
    figures at /metrics (an in-process histogram would differ per process and
    vanish with it). One HINCRBY per bucket touched and one HINCRBYFLOAT, in
    one round trip per call.

    Never raises: a metric that cannot be recorded is not worth a failed step.
    """

    def __init__(self, name: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.buckets = tuple(sorted(buckets))
        self._client = None
        self._client_url = ""

    def _redis(self):
        if self._client is None or self._client_url != settings.REDIS_URL:
            self._client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2,
                                                socket_connect_timeout=2)  # fmt: skip
            self._client_url = settings.REDIS_URL
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "gantry")
        return self._client, f"{prefix}:metrics:{self.name}"

    def observe(self, values: list[tuple[float, int]]) -> None:
        """Record `count` observations of `value` for each (value, count) pair."""
        if not values:
            return
        increments: dict[str, int] = {}
        total = 0.0
        count = 0
        for value, times in values:
            index = bisect_left(self.buckets, value)
            bucket = str(self.buckets[index]) if index < len(self.buckets) else "+Inf"
            increments[bucket] = increments.get(bucket, 0) + times
            total += value * times
            count += times
        try:
            client, key = self._redis()
            with client.pipeline(transaction=False) as pipe:
                for bucket, times in increments.items():
                    pipe.hincrby(key, bucket, times)
                pipe.hincrbyfloat(key, "sum", total)
                pipe.hincrby(key, "count", count)
                pipe.execute()
        except Exception:  # Redis away: the metric misses these, nothing else does
            log.debug("histogram %s not recorded", self.name, exc_info=True)

    def read(self) -> tuple[list[tuple[str, float]], float] | None:
        """Cumulative (le, count) pairs ending with +Inf, and the sum; None if never observed."""
        client, key = self._redis()
        stored = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        if not stored:
            return None
        running = 0
        cumulative = []
        for bucket in [*(str(b) for b in self.buckets), "+Inf"]:
            running += int(stored.get(bucket, 0))
            cumulative.append((bucket, float(running)))
        return cumulative, float(stored.get("sum", 0))

    def reset(self) -> None:
        client, key = self._redis()
        client.delete(key)


# Print → stored latency of deployment log lines: from the moment a worker read
# a line from a step's output to the commit of the COPY that stored it.
LOG_STORE_LATENCY = SharedHistogram(
    "log_store_latency_seconds",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
