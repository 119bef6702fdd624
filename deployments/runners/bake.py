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

from deployments.runners.base import Runner, StepContext, StepFailed
from portal.cloud.alarm_sources import (
    parse_matchers,
    read_alertmanager_alerts,
    read_cloudwatch_alarms,
)
from portal.cloud.process import Deadline


class BakeRunner(Runner):
    kind = "bake"

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
        matchers = parse_matchers(ctx.expand(section["matchers"]))
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
