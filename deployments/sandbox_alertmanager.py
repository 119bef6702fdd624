"""The demo's Prometheus Alertmanager, which fintech-ai-platform's environments
read their alarms from (seed 003's Prometheus rules; `seed_demo`'s
PLATFORM_ALARMS point at http://127.0.0.1:9093).

Debian's real `prometheus-alertmanager` (`/usr/bin/prometheus-alertmanager`,
installed by `make run` when missing) runs with a minimal configuration in
`var/alertmanager/`: one null receiver, since the demo notifies no one and
Gantry reads the alerts itself, and no cluster port. No Prometheus runs in the
demo, so this process posts what Prometheus would: seed 003's alerts firing in
the platform's namespaces, again every minute with an `endsAt` a few minutes
ahead, as Prometheus re-sends firing alerts. When it stops, they resolve on
their own. Where the binary cannot be had, the FAKE of
`deployments/fake_alertmanager.py` stands in, and says so.

`python -m deployments.sandbox_alertmanager --dir var/alertmanager` runs until
interrupted; it prints "Alertmanager up: …" once the alerts are posted.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from deployments.fake_alertmanager import FakeAlertmanager

BINARY = "/usr/bin/prometheus-alertmanager"
HOST = "127.0.0.1"
PORT = 9093
# The null receiver: every alert is routed, none is sent anywhere.
CONFIG = """\
# Written by deployments/sandbox_alertmanager.py for the demo: alerts are kept
# for Gantry to read (GET /api/v2/alerts) and sent nowhere.
route:
  receiver: "null"
  group_by: [alertname, namespace]
receivers:
  - name: "null"
"""
REPOST_SECONDS = 60
# An alert not posted again within this long resolves, as when Prometheus stops firing it.
ALERT_LIFETIME = timedelta(minutes=5)
READY_SECONDS = 20
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class DemoAlert:
    """One of seed 003's alert rules firing in one namespace."""

    rule: str
    namespace: str
    severity: str
    summary: str
    description: str
    expr: str
    firing_for: timedelta
    labels: dict = field(default_factory=dict)

    def payload(self, started: datetime, now: datetime) -> dict:
        """The alert as Prometheus posts it to Alertmanager's `/api/v2/alerts`."""
        return {
            "labels": {"alertname": self.rule, "namespace": self.namespace,
                       "severity": self.severity, "job": "kubernetes-pods", **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
            "startsAt": _iso(started - self.firing_for),
            "endsAt": _iso(now + ALERT_LIFETIME),
            "generatorURL": f"http://prometheus:9090/graph?g0.expr={quote(self.expr)}",
        }  # fmt: skip


# Staging's error rate is the alarm on the dashboard; dev's memory warning shows
# the second severity the environments' matchers select; production is quiet.
DEMO_ALERTS = (
    DemoAlert(
        "HighErrorRate", "fintech-ai-staging", "critical", "High error rate detected",
        "Error rate is 0.23 errors per second",
        'rate(http_requests_total{status=~"5.."}[5m]) > 0.1', timedelta(minutes=42),
        {"service": "api-gateway", "pod": "api-gateway-7d9f8c6b5-x2k4q"},
    ),
    DemoAlert(
        "HighMemoryUsage", "fintech-ai-dev", "warning",
        "High memory usage on ml-service-5c8d7f9b4-m7p2r",
        "Memory usage is 86% of the container's limit",
        "(container_memory_usage_bytes / container_spec_memory_limit_bytes) > 0.8",
        timedelta(hours=3), {"service": "ml-service", "pod": "ml-service-5c8d7f9b4-m7p2r"},
    ),
)  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_config(directory: Path) -> Path:
    """The configuration file (and the data directory beside it); returns its path."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(CONFIG)
    return config


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def post_alerts(url: str, alerts: list[dict], timeout: float = 5) -> None:
    """POST alerts to `/api/v2/alerts`; raises OSError (URLError, HTTPError) if refused."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout):
        pass


def wait_ready(url: str, process: subprocess.Popen | None = None, seconds: float = 20) -> bool:
    """True once `/-/ready` answers 200; False after `seconds` or if `process` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _stop_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when this process
    dies, even by SIGKILL, so no orphan keeps port 9093 from the next `make run`."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RealAlertmanager:
    """Debian's `prometheus-alertmanager` as a child process."""

    def __init__(self, directory: Path, host: str = HOST, port: int = PORT,
                 binary: str = BINARY) -> None:  # fmt: skip
        self.directory = directory
        self.url = f"http://{host}:{port}"
        config = write_config(directory)
        self.log_path = directory / "alertmanager.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address={host}:{port}",
                # One instance: no gossip port (9094) to collide with anyone's.
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_stop_with_parent,
        )

    @staticmethod
    def version(binary: str = BINARY) -> str:
        answer = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        words = (answer.stdout or answer.stderr).split()
        return words[2] if len(words) > 2 and words[1] == "version" else "unknown version"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class StandIn:
    """The FAKE Alertmanager in this process, where the real one is missing."""

    def __init__(self, host: str = HOST, port: int = PORT) -> None:
        self.fake = FakeAlertmanager(host, port).start()
        self.url = self.fake.url

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        self.fake.stop()


def demo_payload(started: datetime, now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(UTC)
    return [alert.payload(started, now) for alert in DEMO_ALERTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="var/alertmanager", help="config, data and log")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if port_in_use(args.host, args.port):
        print(f"Alertmanager not started: {args.host}:{args.port} is in use by another "
              "process; the platform's alarms are read from whatever answers there.",
              flush=True)  # fmt: skip
        return 3
    if os.access(args.binary, os.X_OK):
        server: RealAlertmanager | StandIn = RealAlertmanager(
            directory, args.host, args.port, args.binary
        )
        what = (f"Debian's prometheus-alertmanager {RealAlertmanager.version(args.binary)} "
                f"at {server.url}, config and data in {directory}")  # fmt: skip
        if not wait_ready(server.url, server.process, READY_SECONDS):
            server.stop()
            print(f"Alertmanager did not start; see {server.log_path}", flush=True)
            return 1
    else:
        server = StandIn(args.host, args.port)
        what = (f"STAND-IN (the FAKE of deployments/fake_alertmanager.py; no {args.binary}) "
                f"at {server.url}")  # fmt: skip
    started = datetime.now(UTC)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        try:
            post_alerts(server.url, demo_payload(started))
        except OSError as error:
            print(f"Alertmanager refused the demo alerts: {error}", flush=True)
            return 1
        print(f"Alertmanager up: {what}; {len(DEMO_ALERTS)} demo alerts posted, again "
              f"every {REPOST_SECONDS} s.", flush=True)  # fmt: skip
        while not stopped.wait(REPOST_SECONDS):
            if not server.alive():
                print("Alertmanager exited; its alerts are gone until `make run` restarts it.",
                      flush=True)  # fmt: skip
                return 1
            try:
                post_alerts(server.url, demo_payload(started))
            except OSError as error:  # say so, and try again next round
                print(f"Posting the demo alerts failed: {error}", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
