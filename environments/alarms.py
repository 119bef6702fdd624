"""Alarm states of each environment, polled from its alarm sources, with a
history of every change.

`Environment.alarm_sources` has the shape of a bake step's `cloudwatch` and
`alertmanager` sections (and is validated by the same code,
environments/steps.py); `${environment}`
and `${var.NAME}` references work as in steps. The sources are read with the
bake's own functions (portal/cloud/alarm_sources.py), so a bake and the
dashboard never disagree.

- CloudWatch: every metric alarm named in `alarm_names` or starting with
  `alarm_prefix`, in its own state (OK / ALARM / INSUFFICIENT_DATA).
- Alertmanager: only firing alerts exist there. Each `alertname` matching the
  matchers is an alarm in ALARM; when it stops firing it turns OK (resolved).
- A source that cannot be read (refused, timed out, AWS error, bad JSON, a bad
  reference) turns all its alarms `unknown` with the reason, never OK; if it
  never had any, one placeholder row named after the source ("cloudwatch:
  fraud-detector-staging-*") carries the reason. Once the source answers again
  the placeholder is deleted.
- A CloudWatch alarm the source no longer reports (deleted, renamed, or no
  longer selected) turns `unknown` with that reason and keeps its history.

Two pollers may run at once (the 30 s job overlapping a slow one, or a second
worker): the second waits on the row locks of the environment's alarms, every
change is a conditional UPDATE on the alarm's old state, and only the poller
whose UPDATE hit the row writes the transition; new alarms are inserted under
the unique constraint, so a race to create one leaves one row and one
transition. A source removed from `alarm_sources` takes its alarms (and their
history) with it at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from environments.choices import ALARM_COLOURS, ALARM_RANK, AlarmSource, AlarmState
from environments.live import environment_changed
from environments.models import Alarm, AlarmTransition, Environment
from environments.steps import ConfigError, References, validate_alarm_sources
from portal.cloud.alarm_sources import (
    parse_matchers,
    read_alertmanager_alerts,
    read_cloudwatch_alarms,
)
from portal.cloud.aws import DEFAULT_REGION, AwsAccess
from portal.cloud.errors import CloudError
from portal.cloud.masking import Masker
from portal.core.prepared import prepared
from portal.core.signals import announcement

log = logging.getLogger(__name__)

# Per source and request: a slow source shows `unknown` instead of holding up the poll.
SOURCE_TIMEOUT_SECONDS = 5
# Environments polled at once by the job; each mostly waits on the network.
POLL_THREADS = 8
RECENT_TRANSITIONS = 10
CLIENT_TTL_SECONDS = 15 * 60
_clients: dict[tuple, tuple[object, float]] = {}
_clients_lock = threading.Lock()
CLOUDWATCH_STATES = {AlarmState.OK, AlarmState.ALARM, AlarmState.INSUFFICIENT_DATA}


@dataclass
class Reading:
    """One alarm as a source reports it now."""

    name: str
    state: str
    reason: str
    since: datetime | None = None


@dataclass
class SourceReading:
    """What one source said: its alarms, or why it could not be read."""

    source: str
    alarms: list[Reading] = field(default_factory=list)
    error: str = ""
    # Names the placeholder row of a source that cannot be read.
    label: str = ""


# -- reading ---------------------------------------------------------------------


def _context(environment: Environment) -> References:
    """Resolves `${environment}` and `${var.…}` in the sources like a step would."""
    return References(
        environment_name=environment.slug,
        variables=dict(environment.variables or {}),
        secret_values=dict(environment.secret_variables or {}),
    )


def _cloudwatch_client(region: str, role_arn: str):
    """A CloudWatch client per region, role and endpoint, kept for a while:
    building one costs ~250 ms of CPU (a boto3 session loads its models), and
    the job would otherwise build one per environment every 30 s. Clients are
    thread-safe; role credentials last an hour, the cache a quarter of that."""
    access = AwsAccess(region=region, role_arn=role_arn, session_name="gantry-alarms")
    key = (region, role_arn, access.endpoint_url)
    with _clients_lock:
        client, expires = _clients.get(key, (None, 0.0))
    if client is not None and expires >= time.monotonic():
        return client
    # Built outside the lock: assuming a role is a network call, and one slow
    # account must not hold up the polls of all the others.
    timeouts = Config(
        connect_timeout=SOURCE_TIMEOUT_SECONDS,
        read_timeout=SOURCE_TIMEOUT_SECONDS,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    client = access.client("cloudwatch", config=timeouts)
    with _clients_lock:
        _clients[key] = (client, time.monotonic() + CLIENT_TTL_SECONDS)
    return client


def _cloudwatch(environment: Environment, section: dict, ctx: References) -> SourceReading:
    names = ctx.expand(section["alarm_names"])
    prefix = ctx.expand(section["alarm_prefix"])
    region = environment.region or DEFAULT_REGION
    cloudwatch = _cloudwatch_client(region, environment.aws_role_arn)
    found = read_cloudwatch_alarms(cloudwatch, names, prefix)
    reading = SourceReading(AlarmSource.CLOUDWATCH)
    for alarm in found:
        state = alarm.get("StateValue")
        reading.alarms.append(
            Reading(
                name=alarm["AlarmName"],
                state=state if state in CLOUDWATCH_STATES else AlarmState.UNKNOWN,
                reason=alarm.get("StateReason", ""),
                since=alarm.get("StateUpdatedTimestamp"),
            )
        )
    for name in sorted(set(names) - {a["AlarmName"] for a in found}):
        reason = f"Not found in CloudWatch ({region}): deleted or misspelt in alarm_names?"
        reading.alarms.append(Reading(name, AlarmState.UNKNOWN, reason))
    return reading


def _alertmanager(section: dict, ctx: References) -> SourceReading:
    matchers = ctx.expand(section["matchers"])
    reading = SourceReading(AlarmSource.ALERTMANAGER)
    alerts = read_alertmanager_alerts(
        ctx.expand(section["url"]), parse_matchers(matchers), SOURCE_TIMEOUT_SECONDS
    )
    by_name: dict[str, list[dict]] = {}
    for alert in alerts:
        name = alert.get("labels", {}).get("alertname", "unnamed alert")
        by_name.setdefault(name, []).append(alert)
    for name, firing in sorted(by_name.items()):
        # One alarm per alert name: seed 003's HighErrorRate may fire for several pods.
        summaries = sorted({a.get("annotations", {}).get("summary", "") for a in firing} - {""})
        reason = "; ".join(summaries) or "Firing"
        if len(firing) > 1:
            reason = f"{len(firing)} alerts firing: {reason}"
        starts = [parse_datetime(str(a.get("startsAt", ""))) for a in firing]
        since = min((s for s in starts if s is not None), default=None)
        reading.alarms.append(Reading(name, AlarmState.ALARM, reason, since))
    return reading


def read_sources(environment: Environment) -> list[SourceReading]:
    """Ask every source of the environment; never raises for a source's fault."""
    try:
        sources = validate_alarm_sources(environment.alarm_sources)
    except ConfigError as error:
        # Saved past the admin's check (shell, fixtures): every source it names is unknown.
        named = [s for s in AlarmSource.values if isinstance(environment.alarm_sources, dict)
                 and s in environment.alarm_sources] or [AlarmSource.CLOUDWATCH]  # fmt: skip
        return [
            SourceReading(
                source, error=f"Invalid alarm_sources: {error}", label=f"{source}: alarm_sources"
            )  # fmt: skip
            for source in named
        ]
    ctx = _context(environment)
    readings = []
    for source, section in sources.items():
        try:
            if source == AlarmSource.CLOUDWATCH:
                readings.append(_cloudwatch(environment, section, ctx))
            else:
                readings.append(_alertmanager(section, ctx))
        except CloudError as error:
            readings.append(
                SourceReading(source, error=error.message, label=_label(source, section))
            )
        except (BotoCoreError, ClientError) as error:  # assuming the role, building the client
            readings.append(SourceReading(source, error=str(error), label=_label(source, section)))
        except Exception as error:  # a source's fault must never stop the poll of the others
            log.exception("reading %s of %s failed", source, environment)
            reason = f"Unexpected error reading the source ({type(error).__name__}); see the logs."
            readings.append(SourceReading(source, error=reason, label=_label(source, section)))
    return readings


def _label(source: str, section: dict) -> str:
    """The placeholder's name, from the unexpanded config (it may hold secrets)."""
    if source == AlarmSource.CLOUDWATCH:
        prefix = [f"{section['alarm_prefix']}*"] if section["alarm_prefix"] else []
        return "cloudwatch: " + ", ".join(section["alarm_names"] + prefix)
    return "alertmanager: " + (", ".join(section["matchers"]) or section["url"])


# -- storing ---------------------------------------------------------------------


def _wanted(
    readings: list[SourceReading], existing: list[Alarm], mask: Masker
) -> tuple[dict[tuple[str, str], Reading], list[int]]:
    """The state each alarm should have now, and the placeholders to drop."""
    wanted: dict[tuple[str, str], Reading] = {}
    placeholders = []
    for reading in readings:
        own = [a for a in existing if a.source == reading.source]
        if reading.error:
            reason = mask(reading.error)
            for alarm in own or [Alarm(source=reading.source, name=reading.label)]:
                wanted[(reading.source, alarm.name)] = Reading(
                    alarm.name, AlarmState.UNKNOWN, reason
                )
            continue
        for alarm in reading.alarms:
            wanted[(reading.source, alarm.name)] = alarm
        for alarm in own:
            if (alarm.source, alarm.name) in wanted:
                continue
            if alarm.name.startswith(f"{alarm.source}: "):
                placeholders.append(alarm.pk)
            elif alarm.source == AlarmSource.ALERTMANAGER:
                wanted[(alarm.source, alarm.name)] = Reading(
                    alarm.name, AlarmState.OK, "Resolved: no longer firing."
                )
            else:
                wanted[(alarm.source, alarm.name)] = Reading(
                    alarm.name,
                    AlarmState.UNKNOWN,
                    "No longer reported by CloudWatch: deleted, renamed, or no longer "
                    "selected by alarm_sources.",
                )
    return wanted, placeholders


def _store(environment: Environment, key: tuple[str, str], reading: Reading, now: datetime,
           current: Alarm | None) -> AlarmTransition | None:  # fmt: skip
    """Bring one alarm row to the reading; the transition if this call made one."""
    source, name = key
    since = reading.since if reading.since and reading.since <= now else now
    if current is not None and since < current.since:
        # E.g. OK again after an unreachable spell: the source's own time is
        # older than what we recorded, and history must stay in order.
        since = now
    if current is None:
        try:
            with transaction.atomic():  # savepoint: a concurrent poller may insert it first
                current = Alarm.objects.create(
                    environment=environment, source=source, name=name, state=reading.state,
                    reason=reading.reason, since=since, checked_at=now,
                )  # fmt: skip
        except IntegrityError:
            current = Alarm.objects.get(environment=environment, source=source, name=name)
        else:
            return AlarmTransition.objects.create(
                alarm=current, environment=environment, from_state="", to_state=reading.state,
                reason=reading.reason, at=since,
            )  # fmt: skip
    if current.state == reading.state:
        if current.reason != reading.reason:
            Alarm.objects.filter(pk=current.pk, state=reading.state).update(
                reason=reading.reason, checked_at=now
            )
        return None
    # Only the poller whose UPDATE still finds the old state records the change.
    if not Alarm.objects.filter(pk=current.pk, state=current.state).update(
        state=reading.state, reason=reading.reason, since=since, checked_at=now
    ):
        return None
    return AlarmTransition.objects.create(
        alarm=current, environment=environment, from_state=current.state,
        to_state=reading.state, reason=reading.reason, at=since,
    )  # fmt: skip


def poll_environment(environment: Environment) -> list[AlarmTransition]:
    """Read the environment's sources, store the states, and return the new
    transitions (notified, and broadcast to open dashboards after commit)."""
    first_poll = environment.alarms_checked_at is None
    readings = read_sources(environment)  # network first: no transaction held open meanwhile
    now = timezone.now()
    with transaction.atomic():
        # Lock the rows in one order: a second poller waits here, then reads
        # what the first stored (and never deadlocks against it).
        existing = list(
            Alarm.objects.filter(environment=environment).select_for_update().order_by("pk")
        )
        by_key = {(a.source, a.name): a for a in existing}
        wanted, placeholders = _wanted(readings, existing, Masker(environment.secret_variables))
        transitions = []
        for key, reading in wanted.items():
            transition = _store(environment, key, reading, now, by_key.get(key))
            if transition is not None:
                transitions.append(transition)
        # A source taken out of alarm_sources takes its alarms with it (the
        # admin change is audited); so do placeholders of sources that answer.
        polled = {reading.source for reading in readings}
        dropped, _ = (
            Alarm.objects.filter(environment=environment)
            .filter(Q(pk__in=placeholders) | ~Q(source__in=polled))
            .delete()
        )
        _announce(environment, transitions)
        if transitions or dropped:
            environment_changed(environment.pk, "alarms")
    # One row per poll says when the sources were read; the alarm rows are
    # written only when they change. Outside the transaction: the environment
    # row is locked by deployment requests, and needs holding only this long.
    Environment.objects.filter(pk=environment.pk).update(alarms_checked_at=now)
    if first_poll and not (transitions or dropped):
        # Sources that answered with nothing: the card goes from "not polled
        # yet" to "nothing firing", a change no alarm row announces.
        environment_changed(environment.pk, "alarms")
    return transitions


def _announce(environment: Environment, transitions: list[AlarmTransition]) -> None:
    """One notification per poll: an alarm first seen OK is news to no one."""
    news = [t for t in transitions if t.from_state or t.to_state != AlarmState.OK]
    if not news:
        return
    if len(news) == 1:
        t = news[0]
        subject = f"{environment}: {t.alarm.name} {t.from_state or 'new'} → {t.to_state}"
    else:
        firing = sum(t.to_state == AlarmState.ALARM for t in news)
        subject = f"{environment}: {len(news)} alarm changes, {firing} in ALARM"
    lines = [
        f"{t.alarm.name} ({t.alarm.source}): {t.from_state or 'new'} → {t.to_state}"
        + (f": {t.reason}" if t.reason else "")
        for t in news
    ]
    page = reverse("environment-detail", args=[environment.application.slug, environment.slug])
    body = "\n".join([subject, "", *lines, "", settings.PORTAL_URL.rstrip("/") + page, ""])
    announcement.send(__name__, environment=environment, event="alarm", subject=subject, body=body)


# -- the job ---------------------------------------------------------------------


def _poll_one(environment_id: int) -> int:
    try:
        environment = Environment.objects.select_related("application").get(pk=environment_id)
        return len(poll_environment(environment))
    except Environment.DoesNotExist:
        return 0  # deleted since the job listed it
    except Exception:  # one environment's failure must not stop the others
        log.exception("polling the alarms of environment %s failed", environment_id)
        return 0
    finally:
        connections.close_all()  # this thread's connections only


def poll_alarms() -> int:
    """RQ job (low queue, every 30 s): poll every environment that has alarm
    sources, a few at once; returns how many transitions were recorded. Safe
    to run twice, or two at once."""
    # Environments whose sources were all removed are polled once more, to drop their alarms.
    watched = Environment.objects.exclude(alarm_sources={}) | Environment.objects.filter(
        pk__in=Alarm.objects.values("environment_id")
    )
    ids = list(watched.order_by("pk").values_list("pk", flat=True).distinct())
    if not ids:
        return 0
    with ThreadPoolExecutor(max_workers=min(POLL_THREADS, len(ids))) as pool:
        recorded = sum(pool.map(_poll_one, ids))
    if recorded:
        log.info("recorded %d alarm transition(s) in %d environment(s)", recorded, len(ids))
    return recorded


# -- pages -----------------------------------------------------------------------


# Prepared (portal/core/prepared.py): the environment page reads them on every request.
@prepared(environment_id=int)
def _alarms_of(environment_id: int) -> QuerySet:
    return Alarm.objects.filter(environment_id=environment_id).order_by()


@prepared(environment_id=int)
def _recent_transitions_of(environment_id: int) -> QuerySet:
    return AlarmTransition.objects.filter(environment_id=environment_id).select_related("alarm")[
        :RECENT_TRANSITIONS
    ]


def alarm_panel(environment: Environment) -> dict:
    """Context of the environment page's Alarms section: problems first."""
    # No model ordering (it joins the environments): sorted here, as on the dashboard.
    alarms = sorted(
        _alarms_of.of(environment),
        key=lambda a: (ALARM_RANK.get(a.state, 1), a.name),
    )
    transitions = _recent_transitions_of.of(environment)
    for alarm in alarms:
        alarm.colour = ALARM_COLOURS.get(alarm.state, "grey")
    for transition in transitions:
        transition.colour = ALARM_COLOURS.get(transition.to_state, "grey")
    return {"alarms": alarms, "alarm_transitions": transitions}
