"""bake steps: CloudWatch alarms in moto and a FAKE Alertmanager (a local
http.server answering `/api/v2/alerts` like Alertmanager's API v2)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from deployments.runners.bake import BakeRunner
from environments.steps import ConfigError
from portal.cloud.alarm_sources import matcher_holds
from portal.cloud.errors import CloudError

pytestmark = pytest.mark.slow


class FakeAlertmanager:
    """Answers GET /api/v2/alerts with `self.alerts`; remembers the filters asked for."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.queries: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                url = urlsplit(self.path)
                owner.queries.append(parse_qs(url.query))
                payload = json.dumps(owner.alerts if url.path == "/api/v2/alerts" else {}).encode()
                self.send_response(200 if url.path == "/api/v2/alerts" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def alert(name: str, state: str = "active", **labels) -> dict:
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on fraud-api"},
        "startsAt": "2024-05-01T10:00:00.000Z",
        "endsAt": "2024-05-01T11:00:00.000Z",
        "updatedAt": "2024-05-01T10:00:00.000Z",
        "fingerprint": "abc123",
        "receivers": [{"name": "pager"}],
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
        "generatorURL": "http://prometheus/graph",
    }


@pytest.fixture
def alertmanager():
    fake = FakeAlertmanager()
    yield fake
    fake.server.shutdown()


def set_alarm(endpoint: str, name: str, state: str) -> None:
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="ca-central-1")
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="Threshold crossed")


def test_it_passes_a_quiet_bake(make_ctx, demo_aws, alertmanager):
    alertmanager.alerts = [alert("HighLatency", namespace="other-team")]
    ctx = make_ctx(
        {
            # Long enough for three checks even when each is slowed by a loaded machine.
            "duration_seconds": 1,
            "poll_seconds": 0.05,
            "cloudwatch": {"alarm_prefix": f"fraud-detector-{demo_aws['environment']}-"},
            "alertmanager": {"url": alertmanager.url, "matchers": ["namespace=fraud-detector"]},
        }
    )

    outputs = BakeRunner().run(ctx)

    assert outputs["checks"] >= 3
    assert "Watching 3 CloudWatch alarm(s), all OK." in ctx.log.text
    assert alertmanager.queries[0]["filter"] == ['namespace="fraud-detector"']


def test_it_fails_when_an_alarm_fires_during_the_bake(make_ctx, demo_aws, moto_endpoint):
    alarm = f"fraud-detector-{demo_aws['environment']}-5xx"
    # The bake ends when the alarm fires; its length is only a loaded machine's margin.
    ctx = make_ctx(
        {"duration_seconds": 60, "poll_seconds": 0.05, "cloudwatch": {"alarm_names": [alarm]}}
    )
    threading.Timer(0.5, set_alarm, (moto_endpoint, alarm, "ALARM")).start()

    with pytest.raises(CloudError, match=f"CloudWatch alarm {alarm} is in ALARM") as failure:
        BakeRunner().run(ctx)

    assert failure.value.details == {"alarm": alarm, "source": "cloudwatch"}
    assert "Threshold crossed" in failure.value.message


def test_it_fails_on_a_firing_alertmanager_alert_that_matches(make_ctx, alertmanager):
    alertmanager.alerts = [
        alert("FraudApiErrorRate", state="suppressed", namespace="fraud-detector-staging"),
        alert("FraudApiErrorRate", namespace="fraud-detector-staging", severity="critical"),
    ]
    matchers = ["namespace=fraud-detector-${environment}", "severity=~critical|page"]
    ctx = make_ctx(
        {
            "duration_seconds": 30,  # fails at the first check: only a loaded machine's margin
            "poll_seconds": 0.05,
            "alertmanager": {"url": alertmanager.url, "matchers": matchers},
        }
    )

    with pytest.raises(CloudError, match="Alertmanager alert FraudApiErrorRate is firing"):
        BakeRunner().run(ctx)


def test_it_fails_when_alertmanager_cannot_be_read(make_ctx):
    ctx = make_ctx({"duration_seconds": 5, "alertmanager": {"url": "http://127.0.0.1:9"}})

    with pytest.raises(CloudError, match="Cannot read Alertmanager"):
        BakeRunner().run(ctx)


def test_it_fails_naming_alarms_that_do_not_exist(make_ctx):
    ctx = make_ctx({"duration_seconds": 1, "cloudwatch": {"alarm_names": ["no-such-alarm"]}})

    with pytest.raises(CloudError, match="not found: no-such-alarm"):
        BakeRunner().run(ctx)


def test_matchers_follow_alertmanager_semantics():
    labels = {"severity": "critical", "namespace": "fraud-detector-staging"}

    assert matcher_holds(labels, "severity", "=~", "critical|page")
    assert not matcher_holds(labels, "namespace", "=~", "fraud")  # anchored, like Alertmanager
    assert matcher_holds(labels, "team", "!=", "risk")
    assert matcher_holds(labels, "severity", "!~", "info|warning")


def test_it_names_the_bad_key_in_the_config():
    runner = BakeRunner()
    with pytest.raises(ValueError, match="^cloudwatch"):
        runner.validate_config({"duration_seconds": 60})
    with pytest.raises(ValueError, match="^alertmanager.url"):
        runner.validate_config({"alertmanager": {"matchers": []}})
    with pytest.raises(ValueError, match="^alertmanager.matchers"):
        runner.validate_config({"alertmanager": {"url": "http://am", "matchers": ["sev~~x"]}})


def test_it_reads_only_http_alertmanagers():
    from portal.cloud.alarm_sources import read_alertmanager_alerts

    with pytest.raises(ConfigError, match="http:// or https://"):
        BakeRunner().validate_config({"alertmanager": {"url": "file:///etc/passwd"}})
    with pytest.raises(CloudError, match="not an http"):
        read_alertmanager_alerts("file:///etc/passwd", [])
