"""The demo's Alertmanager: Debian's real `prometheus-alertmanager`, started
with the sandbox's configuration on a free port, fed the demo's alerts, and
read back through Gantry's own alarm poller (environments/alarms.py), with the
matchers `seed_demo` gives fintech-ai-platform's environments."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

from deployments import sandbox_alertmanager as sandbox
from deployments.demo import PLATFORM_ALARMS
from environments.alarms import poll_environment
from environments.choices import AlarmSource, AlarmState, Tier
from environments.models import Alarm, Application, Environment

pytestmark = pytest.mark.slow
real_binary = pytest.mark.skipif(
    not os.access(sandbox.BINARY, os.X_OK),
    reason=f"Debian's prometheus-alertmanager is not installed ({sandbox.BINARY}); "
    "`apt-get install prometheus-alertmanager` (.ci/run and `make run` do)",
)

NAMESPACES = {"dev": "fintech-ai-dev", "staging": "fintech-ai-staging",
              "production": "fintech-ai-prod"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    server = sandbox.RealAlertmanager(tmp_path / "alertmanager", port=free_port())
    try:
        assert sandbox.wait_ready(server.url, server.process), server.log_path.read_text(
            errors="replace"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture
def platform(db) -> dict[str, Environment]:
    """fintech-ai-platform's environments with the demo's Alertmanager matchers;
    `point_at` gives them the test's Alertmanager."""
    app = Application.objects.create(slug="fintech-ai-platform", name="FinTech AI Platform")
    return {
        slug: Environment.objects.create(
            application=app, slug=slug, name=slug.title(), order=order, tier=tier,
            variables={"namespace": NAMESPACES[slug]},
        )
        for order, (slug, tier) in enumerate(
            (("dev", Tier.DEVELOPMENT), ("staging", Tier.STAGING),
             ("production", Tier.PRODUCTION)), start=1)
    }  # fmt: skip


def point_at(platform: dict[str, Environment], url: str) -> None:
    for environment in platform.values():
        environment.alarm_sources = {
            "alertmanager": {**PLATFORM_ALARMS["alertmanager"], "url": url}
        }
        environment.save(update_fields=["alarm_sources"])


def states(environment: Environment) -> dict[str, tuple[str, str]]:
    return {a.name: (a.state, a.reason) for a in Alarm.objects.filter(environment=environment)}


def api(url: str, path: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        text = answer.read()
    return json.loads(text) if text else None


@real_binary
def test_it_runs_with_the_sandbox_config_and_keeps_its_data_in_the_given_directory(alertmanager):
    config = alertmanager.directory / "alertmanager.yml"
    assert 'receiver: "null"' in config.read_text()
    status = api(alertmanager.url, "/api/v2/status")
    assert status["config"]["original"].count("null") >= 2  # the route's and the receiver's
    assert status["versionInfo"]["version"] == sandbox.RealAlertmanager.version()
    # No gossip: a single instance, so nothing binds the cluster port.
    assert status["cluster"]["status"] == "disabled"
    assert (alertmanager.directory / "data").is_dir()


@real_binary
def test_gantry_reads_the_demo_alerts_with_the_seeds_matchers(alertmanager, platform):
    point_at(platform, alertmanager.url)
    started = datetime.now(UTC)
    sandbox.post_alerts(alertmanager.url, sandbox.demo_payload(started))

    for environment in platform.values():
        poll_environment(environment)

    assert states(platform["staging"]) == {
        "HighErrorRate": (AlarmState.ALARM, "High error rate detected")
    }
    assert states(platform["dev"]) == {
        "HighMemoryUsage": (AlarmState.ALARM, "High memory usage on ml-service-5c8d7f9b4-m7p2r")
    }
    assert states(platform["production"]) == {}
    firing = Alarm.objects.get(environment=platform["staging"])
    assert firing.source == AlarmSource.ALERTMANAGER
    # Since when it fires: the alert's own startsAt, as Alertmanager kept it.
    assert abs(firing.since - (started - timedelta(minutes=42))) < timedelta(seconds=1)


@real_binary
def test_a_resolved_or_silenced_alert_turns_ok(alertmanager, platform):
    point_at(platform, alertmanager.url)
    staging = platform["staging"]
    now = datetime.now(UTC)
    sandbox.post_alerts(alertmanager.url, sandbox.demo_payload(now))
    poll_environment(staging)
    assert states(staging)["HighErrorRate"][0] == AlarmState.ALARM

    # Silenced by someone on call: no longer active, so Gantry stops counting it.
    silence = api(alertmanager.url, "/api/v2/silences", {
        "matchers": [{"name": "namespace", "value": NAMESPACES["staging"], "isRegex": False,
                      "isEqual": True}],
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test", "comment": "known: replaying traffic",
    })  # fmt: skip
    [change] = poll_environment(staging)
    assert (change.from_state, change.to_state) == (AlarmState.ALARM, AlarmState.OK)

    # Fires again once the silence is lifted, then Prometheus resolves it (endsAt now).
    urllib.request.urlopen(
        urllib.request.Request(
            f"{alertmanager.url}/api/v2/silence/{silence['silenceID']}", method="DELETE"
        ),
        timeout=5,
    ).close()
    poll_environment(staging)
    assert states(staging)["HighErrorRate"][0] == AlarmState.ALARM
    [resolved] = [
        {**a, "endsAt": datetime.now(UTC).isoformat()}
        for a in sandbox.demo_payload(now)
        if a["labels"]["namespace"] == NAMESPACES["staging"]
    ]
    sandbox.post_alerts(alertmanager.url, [resolved])
    time.sleep(0.1)
    poll_environment(staging)
    assert states(staging) == {"HighErrorRate": (AlarmState.OK, "Resolved: no longer firing.")}


@real_binary
def test_the_sandbox_process_starts_it_feeds_it_and_stops_it(tmp_path, platform):
    """What `make run` starts: `python -m deployments.sandbox_alertmanager`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.sandbox_alertmanager",
         "--dir", str(tmp_path / "am"), "--port", str(port)],
        cwd=settings.BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("Alertmanager up: Debian's prometheus-alertmanager"), line
        point_at(platform, f"http://127.0.0.1:{port}")
        staging = platform["staging"]
        poll_environment(staging)
        assert states(staging)["HighErrorRate"][0] == AlarmState.ALARM
        assert Path(tmp_path / "am" / "alertmanager.yml").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    # Its Alertmanager went with it: the port is free again.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@real_binary
def test_it_refuses_to_start_on_a_port_someone_else_holds(tmp_path, alertmanager):
    port = int(alertmanager.url.rsplit(":", 1)[1])
    answer = subprocess.run(
        [sys.executable, "-m", "deployments.sandbox_alertmanager",
         "--dir", str(tmp_path / "second"), "--port", str(port)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert answer.returncode == 3
    assert f"127.0.0.1:{port} is in use by another process" in answer.stdout


def test_without_the_binary_the_stand_in_answers_and_says_so(tmp_path, platform):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.sandbox_alertmanager", "--dir", str(tmp_path),
         "--port", str(port), "--binary", str(tmp_path / "no-such-alertmanager")],
        cwd=settings.BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("Alertmanager up: STAND-IN"), line
        point_at(platform, f"http://127.0.0.1:{port}")
        staging = platform["staging"]
        poll_environment(staging)
        assert states(staging) == {"HighErrorRate": (AlarmState.ALARM, "High error rate detected")}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
