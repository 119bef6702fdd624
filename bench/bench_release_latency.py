"""Deploy engine, approval → first log line: with one real `rqworker` already
running (`manage.py rqworker high default low`, as deployed), a deployment
awaiting its one approval (process: one quick `command` step) is approved
through Deployment.approve; measured from the approve call to the first
LogLine row (polled every millisecond) and to its receipt by a WebSocket
viewer on a real uvicorn server. Goal: p50 to the first row ≤ 150 ms.

The path: approve → on-commit enqueue → the worker's blocking pop →
run_deployment (start, broadcast, LogWriter) → the first batch flushed (at
once: a line into an empty buffer wakes the flusher) → the row, then the
channel group.

python -m bench.bench_release_latency [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.bench_logs import (  # noqa: E402
    log_socket_url,
    machine,
    seed,
    session_cookie,
    setup_engine_django,
    start_server,
    stop,
)

GOAL_P50_MS = 150.0
QUEUES = ("high", "default", "low")
WORKER_ARGS = os.environ.get("BENCH_WORKER_ARGS", "").split()


def start_worker() -> subprocess.Popen:
    """One rqworker, as in production; returns once it is listening."""
    from django_rq import get_connection
    from rq import Worker

    connection = get_connection("default")
    before = {worker.name for worker in Worker.all(connection=connection)}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", *QUEUES, *WORKER_ARGS],
        cwd=common.ROOT, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("rqworker exited at start-up")
        if {worker.name for worker in Worker.all(connection=connection)} - before:
            return process
        time.sleep(0.1)
    stop(process)
    raise RuntimeError("rqworker did not register within 30 s")


def queues_idle() -> bool:
    """No job waiting and no worker busy (e.g. with the request's notification job)."""
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("default")
    return all(django_rq.get_queue(name).count == 0 for name in QUEUES) and all(
        worker.get_state() != "busy" for worker in Worker.all(connection=connection)
    )


class Viewer:
    """A WebSocket viewer on a loop of its own; notes when the first line arrives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def watch(self, url: str, cookie: str, origin: str):
        """Connect (returns once the socket is open); the future gives the first line's ns."""
        connected = threading.Event()
        future = asyncio.run_coroutine_threadsafe(
            self._first_line(url, cookie, origin, connected), self.loop
        )
        if not connected.wait(10):
            raise RuntimeError("viewer could not connect")
        return future

    async def _first_line(self, url: str, cookie: str, origin: str, connected) -> int:
        import aiohttp

        headers = {"Cookie": f"sessionid={cookie}", "Origin": origin}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers=headers, compress=common.WS_COMPRESS) as ws:
                connected.set()
                async for message in ws:
                    now = time.time_ns()
                    if json.loads(message.data).get("type") == "runs":
                        return now
        raise RuntimeError("socket closed before any line")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _wait(predicate, timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def one_release(world: dict, port: int, cookie: str, viewer: Viewer) -> dict:
    from deployments.choices import Status
    from deployments.models import Deployment, LogLine

    users = world["users"]
    deployment = Deployment.request(world["release"], world["staging"], users["alice"], "bench")
    if deployment.status != Status.AWAITING_APPROVAL:
        raise RuntimeError(f"expected awaiting approval, got {deployment.status}")
    _wait(queues_idle, 30, 0.01, "the queues to drain")
    # Connect just before approving: with redis-py 8 an idle channel-layer read
    # times out after 5 s and drops the socket (see docs/PERFORMANCE.md).
    url = log_socket_url(port, deployment.pk)
    first_line = viewer.watch(url, cookie, f"http://127.0.0.1:{port}")
    lines = LogLine.objects.filter(deployment_id=deployment.pk)

    started = time.time_ns()
    deployment.approve(users["bob"], "benchmark")
    approved = time.time_ns()
    while not lines.exists():
        time.sleep(0.001)
    row_seen = time.time_ns()
    written = lines.order_by("seq").values_list("at", flat=True).first()
    received = first_line.result(timeout=10)
    _wait(
        lambda: Deployment.objects.filter(pk=deployment.pk, status=Status.SUCCEEDED).exists(),
        30, 0.02, f"deployment {deployment.pk} to succeed",
    )  # fmt: skip
    return {
        "approve_call_ms": (approved - started) / 1e6,
        "first_row_ms": (row_seen - started) / 1e6,
        "line_written_ms": (written.timestamp() * 1e9 - started) / 1e6,
        "viewer_ms": (received - started) / 1e6,
    }


def run(repeats: int = 20) -> dict:
    """Needs setup_engine_django() first."""
    step = {"name": "Say hello", "kind": "command", "config": {"argv": ["echo", "hello"]}}
    world = seed("latency", [step], required_approvals=1)
    cookie = session_cookie(world["users"]["dave"])
    server, port = start_server()
    worker = start_worker()
    viewer = Viewer()
    try:
        one_release(world, port, cookie, viewer)  # warm-up: imports, connections
        samples = [one_release(world, port, cookie, viewer) for _ in range(repeats)]
    finally:
        viewer.close()
        stop(worker)
        stop(server)
    result: dict = {"repeats": repeats}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        result[key] = {
            "p50": round(common.percentile(values, 50), 1),
            "p90": round(common.percentile(values, 90), 1),
            "max": round(max(values), 1),
        }
    result["goal_p50_ms"] = GOAL_P50_MS
    result["met"] = result["first_row_ms"]["p50"] <= GOAL_P50_MS
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="reuse gantry_bench_engine")
    args = parser.parse_args(argv)
    setup_engine_django(fresh=not args.keep)
    result = {"machine": machine(), "release_latency": run(args.repeats)}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
