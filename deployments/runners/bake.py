"""`bake` steps: watch the environment's alarms for a while after a deploy; the
first one firing fails the step (and the engine starts an automatic rollback).

Sources: CloudWatch alarms by name and/or name prefix, and Prometheus
Alertmanager's `/api/v2/alerts` filtered by label matchers (seed 003).

Config::

    {"duration_seconds": 600, "poll_seconds": 15,
     "cloudwatch": {"alarm_names": ["fraud-detector-staging-5xx"],
                    "alarm_prefix": "fraud-detector-${environment}-"},
     "alertmanager": {"url": "http://alertmanager:9093",
                      "matchers": ["namespace=fraud-detector-${environment}",
                                   "severity=~critical|page"]}}
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from urllib.parse import urlencode

from deployments.runners.base import (
    ConfigError,
    Deadline,
    Runner,
    StepContext,
    StepFailed,
    get_number,
    get_str,
    get_str_list,
    nested,
    reject_unknown,
    require_mapping,
)
from deployments.runners.ecs import aws_call

MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"?(.*?)\"?\s*$")


def parse_matcher(text: str) -> tuple[str, str, str]:
    match = MATCHER_RE.match(text)
    if not match:
        raise ConfigError("alertmanager.matchers", f"{text!r} is not label=value, !=, =~ or !~")
    name, op, value = match.group(1), match.group(2), match.group(3)
    if op in ("=~", "!~"):
        # A bad regex must fail when the config is saved, not at every poll.
        try:
            re.compile(value)
        except re.error as error:
            raise ConfigError("alertmanager.matchers", f"{text!r}: bad regex: {error}") from None
    return name, op, value


def matcher_holds(labels: dict, name: str, op: str, value: str) -> bool:
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None  # Alertmanager anchors regexes
    return found if op == "=~" else not found


class BakeRunner(Runner):
    kind = "bake"
    keys = ("duration_seconds", "poll_seconds", "cloudwatch", "alertmanager")

    def validate_config(self, config: dict) -> dict:
        config = require_mapping(config)
        reject_unknown(config, self.keys)
        cloudwatch = alertmanager = None
        if config.get("cloudwatch") is not None:
            section = config["cloudwatch"]
            if not isinstance(section, dict):
                raise ConfigError("cloudwatch", "must be an object")
            with nested("cloudwatch"):
                reject_unknown(section, ("alarm_names", "alarm_prefix"))
                cloudwatch = {
                    "alarm_names": get_str_list(section, "alarm_names", []),
                    "alarm_prefix": get_str(section, "alarm_prefix", ""),
                }
            if not cloudwatch["alarm_names"] and not cloudwatch["alarm_prefix"]:
                raise ConfigError("cloudwatch.alarm_names", "give alarm_names or alarm_prefix")
        if config.get("alertmanager") is not None:
            section = config["alertmanager"]
            if not isinstance(section, dict):
                raise ConfigError("alertmanager", "must be an object with url and matchers")
            with nested("alertmanager"):
                reject_unknown(section, ("url", "matchers"))
                matchers = get_str_list(section, "matchers", [])
                url = get_str(section, "url").rstrip("/")
                # Read server-side every 30 s: no file://, ftp:// or other schemes
                # (a ${…} reference is checked once expanded, when read).
                if not url.startswith(("http://", "https://", "${")):
                    raise ConfigError("alertmanager.url", "must be an http:// or https:// URL")
                alertmanager = {"url": url, "matchers": matchers}
            for matcher in matchers:
                parse_matcher(matcher)
        if cloudwatch is None and alertmanager is None:
            raise ConfigError("cloudwatch", "watch at least one source: cloudwatch or alertmanager")
        return {
            "duration_seconds": get_number(config, "duration_seconds", 600, 0),
            "poll_seconds": get_number(config, "poll_seconds", 15, 0.05, 600),
            "cloudwatch": cloudwatch,
            "alertmanager": alertmanager,
        }

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        cloudwatch = ctx.aws.client("cloudwatch") if config["cloudwatch"] else None
        deadline = Deadline(config["duration_seconds"])
        ctx.log(f"Baking for {config['duration_seconds']:g} s; any firing alarm fails the deploy.")
        polls = 0
        while True:
            polls += 1
            watched = 0
            if cloudwatch is not None:
                watched += self._check_cloudwatch(ctx, cloudwatch, config["cloudwatch"])
            if config["alertmanager"]:
                self._check_alertmanager(ctx, config["alertmanager"])
            if polls == 1 and cloudwatch is not None:
                ctx.log(f"Watching {watched} CloudWatch alarm(s), all OK.")
            if deadline.passed:
                ctx.log(f"Bake finished after {polls} checks: nothing fired.", "system")
                return {"checks": polls, "duration_seconds": config["duration_seconds"]}
            ctx.sleep(min(config["poll_seconds"], max(deadline.remaining, 0)))

    def rollback(self, ctx: StepContext, outputs: dict) -> dict:
        # Watching alarms changes nothing; a rollback deployment bakes by running again.
        return {"skipped": True}

    def _check_cloudwatch(self, ctx: StepContext, cloudwatch, section: dict) -> int:
        """Fail on the first watched alarm in ALARM; returns how many are watched."""
        names = ctx.expand(section["alarm_names"])
        alarms = read_cloudwatch_alarms(cloudwatch, names, ctx.expand(section["alarm_prefix"]))
        missing = set(names) - {a["AlarmName"] for a in alarms}
        if missing:
            raise StepFailed(f"CloudWatch alarm(s) not found: {', '.join(sorted(missing))}.")
        for alarm in alarms:
            if alarm["StateValue"] == "ALARM":
                raise StepFailed(
                    f"CloudWatch alarm {alarm['AlarmName']} is in ALARM: "
                    f"{alarm.get('StateReason', 'no reason given')}",
                    alarm=alarm["AlarmName"],
                    source="cloudwatch",
                )
        return len(alarms)

    def _check_alertmanager(self, ctx: StepContext, section: dict) -> None:
        matchers = [parse_matcher(m) for m in ctx.expand(section["matchers"])]
        try:
            alerts = read_alertmanager_alerts(ctx.expand(section["url"]), matchers)
        except StepFailed as error:
            raise StepFailed(
                f"{error.message} The bake can't tell whether the release is healthy."
            ) from None
        for alert in alerts:
            name = alert.get("labels", {}).get("alertname", "unnamed alert")
            summary = alert.get("annotations", {}).get("summary", "")
            raise StepFailed(
                f"Alertmanager alert {name} is firing"
                + (f": {summary}" if summary else "")
                + f" (since {alert.get('startsAt', '?')}).",
                alarm=name,
                source="alertmanager",
            )


# -- reading the sources: shared by bake steps and the alarm poller ---------------

# AWS caps AlarmNames at 100 per describe_alarms call.
NAMES_PER_CALL = 100


def read_cloudwatch_alarms(cloudwatch, names: list[str], prefix: str) -> list[dict]:
    """The metric alarms with these names or this name prefix, each once, every
    page read. AWS errors become StepFailed naming the call."""

    def pages(**selection) -> list[dict]:
        paginator = cloudwatch.get_paginator("describe_alarms")
        return [page for page in paginator.paginate(**selection)]

    selections = [
        {"AlarmNames": names[i : i + NAMES_PER_CALL]} for i in range(0, len(names), NAMES_PER_CALL)
    ]
    if prefix:
        selections.append({"AlarmNamePrefix": prefix})
    alarms: dict[str, dict] = {}
    for selection in selections:
        for page in aws_call("Reading CloudWatch alarms", pages, **selection):
            for alarm in page.get("MetricAlarms", []):
                alarms.setdefault(alarm["AlarmName"], alarm)
    return list(alarms.values())


def read_alertmanager_alerts(
    url: str, matchers: list[tuple[str, str, str]], timeout: float = 10
) -> list[dict]:
    """The active (not silenced, not inhibited) alerts of Alertmanager's
    `/api/v2/alerts` that match every matcher. Anything but a JSON list of
    alerts (refused, timed out, HTTP error, bad JSON) raises StepFailed."""
    query = [("active", "true"), ("silenced", "false"), ("inhibited", "false")]
    query += [("filter", f'{n}{op}"{v}"') for n, op, v in matchers]
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):  # after ${…} expansion
        raise StepFailed(f"Cannot read Alertmanager at {base}: not an http(s) URL.")
    try:
        with urllib.request.urlopen(
            f"{base}/api/v2/alerts?{urlencode(query)}", timeout=timeout
        ) as response:
            alerts = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise StepFailed(f"Cannot read Alertmanager at {base}: {error}.") from None
    if not isinstance(alerts, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("labels", {}), dict)
        and isinstance(a.get("status", {}), dict)
        for a in alerts
    ):
        raise StepFailed(f"Cannot read Alertmanager at {base}: the answer is not a list of alerts.")
    return [
        alert
        for alert in alerts
        # Filter here too: the query filters are a hint some proxies drop.
        if alert.get("status", {}).get("state", "active") == "active"
        and all(matcher_holds(alert.get("labels", {}), n, op, v) for n, op, v in matchers)
    ]
