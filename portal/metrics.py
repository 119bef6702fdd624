"""/metrics: Gantry's state in Prometheus' text format, for the team's
Prometheus to scrape from the web port.

Every figure is read at scrape time from where it lives — PostgreSQL, the RQ
queues in Redis, the shared histograms in Redis — so any web replica answers
the same, whichever worker did the work (no per-process counters). A scrape
costs a fixed handful of queries, whatever the history.

Readable with `Authorization: Bearer <METRICS_TOKEN>` (for Prometheus) or a
superuser's API token; anyone else gets a 403.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from rest_framework import authentication, permissions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import Worker

from deployments.choices import Status, StepStatus
from deployments.models import Deployment, StepRun
from deployments.models.queueing import get_queue
from environments.choices import AlarmSource, AlarmState
from environments.models import Alarm
from portal.core.models import ChainVerification
from portal.core.observability import LOG_STORE_LATENCY
from portal.sso import SsoCheckedTokenAuthentication

# Seconds: steps take from a second (an HTTP check) to an hour (a database migration).
STEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class MetricsScraper:
    """Who scrapes with METRICS_TOKEN: no user, only the right to read metrics."""

    is_authenticated = True
    is_superuser = False


class MetricsTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <METRICS_TOKEN>`, compared in constant time.
    Any other bearer value is left to the API-token authentication after it."""

    def authenticate(self, request):
        expected = settings.METRICS_TOKEN
        header = authentication.get_authorization_header(request).split()
        if not expected or len(header) != 2 or header[0].lower() != b"bearer":
            return None
        if hmac.compare_digest(header[1], expected.encode()):
            return MetricsScraper(), None
        return None

    def authenticate_header(self, request) -> None:
        return None  # refusals are 403s, as for a signed-in user without the right


class BearerApiTokenAuthentication(SsoCheckedTokenAuthentication):
    """An API token sent as `Authorization: Bearer <key>`, as Prometheus sends its credentials."""

    keyword = "Bearer"


class CanReadMetrics(permissions.BasePermission):
    message = "Metrics are for Prometheus (METRICS_TOKEN) and superusers' API tokens."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, MetricsScraper) or bool(
            request.user and request.user.is_authenticated and request.user.is_superuser
        )


class ExpositionFormats(BaseContentNegotiation):
    """The format is chosen from Accept by prometheus_client (text 0.0.4 by
    default, OpenMetrics when asked); DRF's renderer only writes refusals."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsView(APIView):
    """GET /metrics (Prometheus text format 0.0.4, or OpenMetrics on request)."""

    content_negotiation_class = ExpositionFormats
    authentication_classes = [
        MetricsTokenAuthentication,
        BearerApiTokenAuthentication,
        SsoCheckedTokenAuthentication,
    ]
    permission_classes = [CanReadMetrics]

    @extend_schema(exclude=True)  # Prometheus' format, not part of the JSON API
    def get(self, request: Request) -> HttpResponse:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(GantryCollector())
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return HttpResponse(encode(registry), content_type=content_type)


class GantryCollector:
    """Builds every metric family at scrape time (prometheus_client's custom collector)."""

    def collect(self):
        yield from queue_metrics()
        yield deployments_by_status()
        yield step_durations()
        latency = log_store_latency()
        if latency is not None:
            yield latency
        yield from audit_chain_metrics()
        yield alarm_source_errors()
        yield drift_detection()


def queue_metrics():
    jobs = GaugeMetricFamily(
        "gantry_rq_jobs", "RQ jobs per queue and state (queued: waiting for a worker).",
        labels=["queue", "state"],
    )  # fmt: skip
    connection = None
    for name in settings.RQ_QUEUES:
        queue = get_queue(name)
        connection = queue.connection
        jobs.add_metric([name, "queued"], queue.count)
        registries = {
            "started": StartedJobRegistry, "failed": FailedJobRegistry,
            "deferred": DeferredJobRegistry, "scheduled": ScheduledJobRegistry,
        }  # fmt: skip
        for state, registry in registries.items():
            jobs.add_metric([name, state], registry(queue=queue).count)
    yield jobs
    workers = GaugeMetricFamily("gantry_rq_workers", "RQ workers registered in Redis.")
    workers.add_metric([], Worker.count(connection=connection) if connection else 0)
    yield workers


def deployments_by_status() -> GaugeMetricFamily:
    counts = dict(Deployment.objects.values_list("status").annotate(n=Count("pk")).order_by())
    family = GaugeMetricFamily(
        "gantry_deployments", "Deployments by status (every status listed, 0 included).",
        labels=["status"],
    )  # fmt: skip
    for status in Status.values:
        family.add_metric([status], counts.get(status, 0))
    return family


def step_durations() -> HistogramMetricFamily:
    """Every finished step run (succeeded or failed), by kind: one grouped query."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    buckets = {
        f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(STEP_BUCKETS)
    }
    rows = (
        StepRun.objects.filter(status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED],
                               started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=duration)
        .values("kind")
        .annotate(total=Count("pk"), seconds=Sum("duration"), **buckets)
        .order_by("kind")
    )  # fmt: skip
    family = HistogramMetricFamily(
        "gantry_step_duration_seconds", "How long finished deployment steps ran, by kind.",
        labels=["kind"],
    )  # fmt: skip
    for row in rows:
        cumulative = [
            (floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(STEP_BUCKETS)
        ]
        cumulative.append(("+Inf", row["total"]))
        seconds = row["seconds"].total_seconds() if row["seconds"] else 0.0
        family.add_metric([row["kind"]], cumulative, seconds)
    return family


def log_store_latency() -> HistogramMetricFamily | None:
    measured = LOG_STORE_LATENCY.read()
    if measured is None:
        return None
    cumulative, seconds = measured
    family = HistogramMetricFamily(
        "gantry_log_store_latency_seconds",
        "Deployment log lines, from the worker reading them off a step's output to "
        "their COPY being committed (every worker, shared through Redis).",
    )
    family.add_metric([], cumulative, seconds)
    return family


def audit_chain_metrics():
    last = ChainVerification.objects.order_by("-started_at", "-id").first()
    verified = GaugeMetricFamily(
        "gantry_audit_chain_ok",
        "1: the last verification of the audit chain found it intact; 0: it found a "
        "break (see the audit page). Absent until the first verification.",
    )
    through = GaugeMetricFamily(
        "gantry_audit_chain_verified_through_seq",
        "The last audit event the last verification covered.",
    )
    when = GaugeMetricFamily(
        "gantry_audit_chain_last_verification_timestamp_seconds",
        "When the last verification of the audit chain finished (alert when it is old).",
    )
    if last is not None:
        verified.add_metric([], 1 if last.ok else 0)
        through.add_metric([], last.verified_through_seq or 0)
        when.add_metric([], (last.finished_at or last.started_at).timestamp())
    yield verified
    yield through
    yield when


def alarm_source_errors() -> GaugeMetricFamily:
    counts = dict(
        Alarm.objects.filter(state=AlarmState.UNKNOWN)
        .values_list("source")
        .annotate(n=Count("pk"))
        .order_by()
    )
    family = GaugeMetricFamily(
        "gantry_alarms_unreadable",
        "Alarms whose source could not be read at the last poll (state unknown), by source.",
        labels=["source"],
    )
    for source in AlarmSource.values:
        family.add_metric([source], counts.get(source, 0))
    return family


def drift_detection() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "gantry_drift_detection_enabled",
        "0: Gantry does not yet compare environments with their Terraform state, so "
        "drift is unknown (not absent). Becomes 1, with a drift metric, once it does.",
    )
    family.add_metric([], 0)
    return family
