"""Scale-out, proven on one machine: two web processes (uvicorn) and two RQ
workers, all real processes on the same PostgreSQL and Redis, as replicas
behind a load balancer would run.

- a viewer connected to web 2 sees every log line of a run carried out by a
  worker, in order, with no gap;
- dashboards on web 1 and on web 2 hear every change, the same ones in the
  same order;
- two deployments of two environments run at once, one on each worker, while
  a third deployment, of an environment already running one, stays queued
  (the environment lock) and runs once the environment is free;
- /metrics answers the same on both web processes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from deployments.choices import FINAL_STATUSES, Status
from deployments.models import Deployment, LogLine, Release
from deployments.viewers import group_name
from environments.live import _publisher, environment_group
from environments.models import Environment, Step
from tests.conftest import env, image
from tests.polling import wait_for
from tests.servers import web_server, worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LINES = 300  # printed by each run's step, in bursts
METRICS_TOKEN = "scale-out-metrics-token-0123456789"


def gated_step(gate: Path, label: str) -> list[str]:
    """Wait (60 s at most) for the gate file, then print LINES lines in bursts."""
    wait = f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; "
    burst = f"i=1; while [ $i -le {LINES} ]; do echo {label} $i; "
    burst += "[ $((i % 50)) -eq 0 ] && sleep 0.05; i=$((i+1)); done"
    return ["sh", "-c", wait + burst]


def session_cookie(user) -> str:
    """A signed-in session (stored in the shared database, so good on every replica)."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


class Listener(threading.Thread):
    """A browser's WebSocket in a thread of its own: every text frame it receives."""

    def __init__(self, url: str, path: str, cookie: str) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.cookie = url, path, cookie
        self.frames: list[dict] = []
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        socket_url = self.url.replace("http://", "ws://") + self.path
        headers = {"Cookie": self.cookie, "Origin": self.url}
        try:
            with connect(socket_url, additional_headers=headers, open_timeout=30) as socket:
                self.connected.set()
                while not self.stop.is_set():
                    try:
                        self.frames.append(json.loads(socket.recv(timeout=0.2)))
                    except TimeoutError:
                        continue
        except ConnectionClosed:
            pass
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.connected.set()


def subscribers(*groups: str) -> list[int]:
    """How many processes Redis has subscribed to each broadcast group."""
    client, prefix = _publisher()
    channels = [f"{prefix}__group__{group}" for group in groups]
    return [count for _, count in client.pubsub_numsub(*channels)]


def statuses(*deployments: Deployment) -> tuple[str, ...]:
    found = dict(
        Deployment.objects.filter(pk__in=[d.pk for d in deployments]).values_list("pk", "status")
    )
    return tuple(found[d.pk] for d in deployments)


def metrics(url: str) -> dict[str, float]:
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        if family.name in ("gantry_deployments", "gantry_log_store_latency_seconds")
        for sample in family.samples
    }


def test_two_webs_and_two_workers_share_one_portal(catalog, release, users, queues, tmp_path):
    dev, staging = env(catalog, "dev"), env(catalog, "staging")
    Environment.objects.filter(pk=staging.pk).update(required_approvals=0)  # queued at once
    gate = tmp_path / "go"
    for environment, label in ((dev, "dev"), (staging, "staging")):
        config = {"argv": gated_step(gate, label), "timeout_seconds": 300}
        Step.objects.create(
            environment=environment, order=1, name="Migrate", kind="command", config=config
        )
    newer = Release.register(
        catalog, "1.5.0", {s: image(s, "b") for s in release.artifact_map()}, users["alice"]
    )
    extra = {"METRICS_TOKEN": METRICS_TOKEN, "DEPLOY_WORKDIR": str(tmp_path / "work")}

    with (
        web_server(tmp_path / "web-1.log", **extra) as web_1,
        web_server(tmp_path / "web-2.log", **extra) as web_2,
        worker(tmp_path / "worker-1.log", **extra) as worker_1,
        worker(tmp_path / "worker-2.log", **extra) as worker_2,
    ):
        dashboards = [Listener(web_1, "/ws/dashboard/", session_cookie(users["dave"])),
                      Listener(web_2, "/ws/dashboard/", session_cookie(users["bob"]))]  # fmt: skip
        for dashboard in dashboards:
            dashboard.start()
        for dashboard in dashboards:
            assert dashboard.connected.wait(60) and dashboard.error is None, dashboard.error
        # Each web process's hub has subscribed to both environments.
        groups = (environment_group(dev.pk), environment_group(staging.pk))
        assert wait_for(lambda: min(subscribers(*groups)) >= 2, timeout=30), subscribers(*groups)

        first_dev = Deployment.request(release, dev, users["alice"], "dev, first")
        first_staging = Deployment.request(release, staging, users["alice"], "staging")
        second_dev = Deployment.request(newer, dev, users["alice"], "dev, second")
        viewer = Listener(web_2, f"/ws/deployments/{first_dev.pk}/logs/",
                          session_cookie(users["dave"]))  # fmt: skip
        viewer.start()
        assert viewer.connected.wait(60) and viewer.error is None, viewer.error
        assert wait_for(lambda: subscribers(group_name(first_dev.pk))[0] >= 1, timeout=30)

        # Both environments' first runs hold at their gate, on the two workers,
        # while the second dev deployment waits for the environment.
        seen: set[tuple[str, ...]] = set()

        def two_running() -> bool:
            now = statuses(first_dev, first_staging, second_dev)
            seen.add(now)
            return now[:2] == (Status.RUNNING, Status.RUNNING)

        assert wait_for(two_running, timeout=90), seen
        time.sleep(1.0)  # give a wrongly free lock the time to let the third one in
        assert statuses(second_dev) == (Status.QUEUED,)
        runners = {d.pk: Deployment.objects.get(pk=d.pk).worker_name
                   for d in (first_dev, first_staging)}  # fmt: skip
        worker_pids = {int(name.rsplit(":", 1)[1]) for name in runners.values()}
        assert worker_pids == {worker_1.pid, worker_2.pid}, runners

        gate.touch()

        def all_done() -> bool:
            now = statuses(first_dev, first_staging, second_dev)
            seen.add(now)
            return all(status in FINAL_STATUSES for status in now)

        assert wait_for(all_done, timeout=180), (seen, logs(tmp_path))
        # Never two runs in one environment at once.
        assert not [s for s in seen if s[0] == Status.RUNNING and s[2] == Status.RUNNING]
        first_dev.refresh_from_db()
        second_dev.refresh_from_db()
        assert statuses(first_dev, first_staging, second_dev) == (Status.SUCCEEDED,) * 3, logs(
            tmp_path
        )
        assert first_dev.finished_at <= second_dev.started_at

        # The viewer on web 2 got every line of the run, in order, once.
        stored = list(LogLine.objects.filter(deployment=first_dev).order_by("seq")
                      .values_list("seq", "text"))  # fmt: skip
        assert wait_for(lambda: received_seqs(viewer) == [seq for seq, _ in stored], timeout=30), (
            received_seqs(viewer)[-5:],
            stored[-5:],
        )
        texts = [text for run in runs(viewer) for text in run["texts"]]
        assert [t for t in texts if t.startswith("dev ")] == [f"dev {i}" for i in range(1, 301)]

        time.sleep(1.0)  # the last changes' broadcasts
        heard = [[frame["environment"] for frame in d.frames if frame.get("type") == "changed"]
                 for d in dashboards]  # fmt: skip
        for listener in (*dashboards, viewer):
            listener.stop.set()
        # Both dashboards heard the same changes, in the same order, of both environments.
        assert heard[0] == heard[1], heard
        assert {dev.pk, staging.pk} <= set(heard[0])
        # Three runs moved each environment through queued, running and finished at least.
        assert heard[0].count(dev.pk) >= 4 and heard[0].count(staging.pk) >= 2, heard[0]

        print(f"\nweb 2's viewer got {len(stored)} lines in order; each dashboard heard "
              f"{len(heard[0])} changes; runs on workers {sorted(worker_pids)}")  # fmt: skip
        # Either web process tells Prometheus the same.
        assert metrics(web_1) == metrics(web_2)
        assert metrics(web_1)["gantry_deployments[('status', 'succeeded')]"] == 3
    for listener in (*dashboards, viewer):
        listener.join(10)


def runs(viewer: Listener) -> list[dict]:
    return [run for frame in viewer.frames if frame.get("type") == "runs" for run in frame["runs"]]


def received_seqs(viewer: Listener) -> list[int]:
    return [run["seq"] + offset for run in runs(viewer) for offset in range(len(run["texts"]))]


def logs(tmp_path: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
