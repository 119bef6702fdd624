"""Reading alarm sources: CloudWatch metric alarms and Prometheus
Alertmanager's `/api/v2/alerts` (seed 003). Shared by the bake step, which
fails a deployment on the first firing alarm, and the alarm poller behind the
dashboard, so the two never disagree."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from urllib.parse import urlencode

from portal.cloud.aws import aws_call
from portal.cloud.errors import CloudError

MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"?(.*?)\"?\s*$")


def parse_matcher(text: str) -> tuple[str, str, str]:
    """`label=value` (or !=, =~, !~) as (name, op, value); ValueError says what is wrong."""
    match = MATCHER_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not label=value, !=, =~ or !~")
    name, op, value = match.group(1), match.group(2), match.group(3)
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"{text!r}: bad regex: {error}") from None
    return name, op, value


def parse_matchers(texts: list[str]) -> list[tuple[str, str, str]]:
    """Matchers as read (after `${…}` references are filled in): a bad one is a
    CloudError naming it, like any other source that cannot be read."""
    try:
        return [parse_matcher(text) for text in texts]
    except ValueError as error:
        raise CloudError(f"Bad Alertmanager matcher: {error}.") from None


def matcher_holds(labels: dict, name: str, op: str, value: str) -> bool:
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None  # Alertmanager anchors regexes
    return found if op == "=~" else not found


# AWS caps AlarmNames at 100 per describe_alarms call.
NAMES_PER_CALL = 100


def read_cloudwatch_alarms(cloudwatch, names: list[str], prefix: str) -> list[dict]:
    """The metric alarms with these names or this name prefix, each once, every
    page read. AWS errors become CloudError naming the call."""

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
    alerts (refused, timed out, HTTP error, bad JSON) raises CloudError."""
    query = [("active", "true"), ("silenced", "false"), ("inhibited", "false")]
    query += [("filter", f'{n}{op}"{v}"') for n, op, v in matchers]
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):  # after ${…} expansion
        raise CloudError(f"Cannot read Alertmanager at {base}: not an http(s) URL.")
    try:
        with urllib.request.urlopen(
            f"{base}/api/v2/alerts?{urlencode(query)}", timeout=timeout
        ) as response:
            alerts = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CloudError(f"Cannot read Alertmanager at {base}: {error}.") from None
    if not isinstance(alerts, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("labels", {}), dict)
        and isinstance(a.get("status", {}), dict)
        for a in alerts
    ):
        raise CloudError(f"Cannot read Alertmanager at {base}: the answer is not a list of alerts.")
    return [
        alert
        for alert in alerts
        # Filter here too: the query filters are a hint some proxies drop.
        if alert.get("status", {}).get("state", "active") == "active"
        and all(matcher_holds(alert.get("labels", {}), n, op, v) for n, op, v in matchers)
    ]
