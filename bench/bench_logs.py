"""Deploy engine, live logs: a step prints 10,000 lines as fast as it can and
20 WebSocket viewers on a real ASGI server (uvicorn) receive them.

The step is a real `command` step run by CommandRunner with a LogWriter as its
log, so every line takes the production path: pipe → reader thread → mask →
batch → one INSERT → channel layer (Redis) → uvicorn → each viewer's socket.
Each line carries its print time (`time.time_ns()`); the viewers (a separate
process, as browsers would be) note when they receive it.
Goals: p99 print → receipt ≤ 50 ms, 0 lines lost, ≥ 5,000 lines/s.

Flat out, a burst lasts about 0.1 s and its p99 is, in effect, the latency
of its last lines: one stall of any of the processes on the two cores
decides it. So the step runs --bursts times (5 in make bench), each from a
fresh deployment, server and viewers, and the goal is on the p99 of every
line of every burst; each burst's own p99 is reported with it.

This module also holds the engine benchmarks' shared set-up (their own
database gantry_bench_engine, Redis db 9, a seeded fraud-detector, uvicorn,
session cookies and the viewer process), used by bench_terraform and
bench_release_latency.

python -m bench.bench_logs [--lines N] [--viewers N] [--bursts N]   # standalone, prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

ENGINE_DB_NAME = "gantry_bench_engine"
ENGINE_REDIS_URL = "redis://127.0.0.1:6379/9"
GOAL_P99_MS = 50.0
GOAL_LINES_PER_S = 5000
END = "END-OF-BENCH"
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
ECR = "123456789012.dkr.ecr.ca-central-1.amazonaws.com"
VENV_BIN = Path(sys.executable).parent


# -- shared engine set-up ---------------------------------------------------------


def engine_database_url() -> str:
    parts = urlsplit(common.bench_database_url())
    return urlunsplit(parts._replace(path=f"/{ENGINE_DB_NAME}"))


def configure_engine_environment() -> dict[str, str]:
    """Point Django (and the uvicorn / rqworker children, which inherit
    os.environ) at the engine's own database and Redis db 9."""
    common.configure_environment()
    os.environ["DATABASE_URL"] = engine_database_url()
    os.environ["REDIS_URL"] = ENGINE_REDIS_URL
    os.environ["CHANNEL_PREFIX"] = "gantry-bench-engine"
    os.environ.setdefault("DEPLOY_WORKDIR", tempfile.mkdtemp(prefix="gantry-bench-deploy-"))
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    return dict(os.environ)


def setup_engine_django(fresh: bool = True) -> None:
    """Recreate gantry_bench_engine (only that one), set Django up and migrate."""
    configure_engine_environment()
    if fresh:
        common.recreate_database(os.environ["DATABASE_URL"], ENGINE_DB_NAME)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # Users are created per run; PBKDF2 would cost ~0.3 s each and measures nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    empty_queues()


def empty_queues() -> None:
    import django_rq

    for name in ("high", "default", "low"):
        django_rq.get_queue(name).empty()


def machine() -> dict:
    """common.machine() plus the load at the time of the run."""
    info = common.machine()
    info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    info["loadavg"] = os.getloadavg()
    return info


def image(service: str, digest_char: str) -> str:
    return f"{ECR}/{service}@sha256:{digest_char * 64}"


def seed(label: str, steps: list[dict], required_approvals: int = 1) -> dict:
    """A fresh fraud-detector-<label> with a staging environment running `steps`,
    a release, and alice (deployer), bob (approver), dave (viewer)."""
    from django.contrib.auth.models import User

    from deployments.models import Release
    from environments.choices import Tier
    from environments.models import Application, Environment, Service, Step
    from portal.core.choices import Role
    from portal.core.models import Membership

    suffix = f"{label}-{time.time_ns() % 10**9}"
    app = Application.objects.create(slug=f"fraud-detector-{suffix}", name="Fraud Detector")
    for slug in SERVICES:
        Service.objects.create(application=app, slug=slug, name=slug)
    staging = Environment.objects.create(
        application=app, slug="staging", name="Staging", order=2, tier=Tier.STAGING,
        required_approvals=required_approvals, secret_variables={"db_password": "s3cr3t-bench"},
    )  # fmt: skip
    for order, step in enumerate(steps, start=1):
        Step.objects.create(environment=staging, order=order, **step)
    users = {}
    for name, role in (("alice", Role.DEPLOYER), ("bob", Role.APPROVER), ("dave", Role.VIEWER)):
        user = User.objects.create_user(f"{name}-{suffix}", f"{name}@example.com", "pw")
        Membership.objects.create(user=user, environment=staging, role=role)
        users[name] = user
    release = Release.register(
        app, "1.4.0", {s: image(s, "a") for s in SERVICES}, users["alice"], notes="bench"
    )
    return {"app": app, "staging": staging, "users": users, "release": release}


def session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(**extra_env: str) -> tuple[subprocess.Popen, int]:
    """A real uvicorn serving portal.asgi:application, as in production
    (Dockerfile), with this environment plus `extra_env`; waits until it listens."""
    port = free_port()
    # A file, not a pipe: nobody reads the server's log while it runs, and a full
    # pipe would stall the server.
    log_file = tempfile.NamedTemporaryFile(prefix="bench-asgi-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [str(VENV_BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--no-access-log", "--ws-per-message-deflate", "false",
         "portal.asgi:application"],
        cwd=common.ROOT, env={**os.environ, **extra_env}, stdout=subprocess.DEVNULL,
        stderr=log_file,
    )  # fmt: skip
    process.log_path = log_file.name
    wait_listening(process, port)
    return process, port


def wait_listening(process: subprocess.Popen, port: int, seconds: float = 30) -> None:
    """Until the server `process` (with its `log_path`) accepts on `port`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {Path(process.log_path).read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not listen within {seconds:g} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_socket_url(port: int, deployment_id: int) -> str:
    return f"ws://127.0.0.1:{port}/ws/deployments/{deployment_id}/logs/?after=0"


# -- the viewers (a separate process) --------------------------------------------


async def _view(url: str, cookie: str, origin: str, ready: asyncio.Event, connected: list):
    """One viewer: every (seq, text, receipt ns) until the END line."""
    import aiohttp

    # Frames are kept raw with their receipt time and decoded after the run:
    # the viewers share the server's two cores, and decoding 20 copies of
    # every line while it streams would slow the system being measured (a
    # browser decodes on its own machine).
    frames: list[tuple[int, str]] = []
    headers = {"Cookie": f"sessionid={cookie}", "Origin": origin}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            url, headers=headers, max_msg_size=0, compress=common.WS_COMPRESS
        ) as ws:
            connected.append(1)
            ready.set()
            async for message in ws:
                now = time.time_ns()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frames.append((now, message.data))
                if END in message.data:
                    # Linger briefly so a duplicate after the end would be seen too.
                    try:
                        extra = await asyncio.wait_for(ws.receive(), timeout=0.3)
                        if extra.type == aiohttp.WSMsgType.TEXT:
                            frames.append((time.time_ns(), extra.data))
                    except TimeoutError:
                        pass
                    break
    return frames


def decode(frames: list[tuple[int, str]]) -> list[tuple[int, str, int]]:
    """A viewer's frames as (seq, text, receipt ns), line by line."""
    received: list[tuple[int, str, int]] = []
    for at, raw in frames:
        data = json.loads(raw)
        if data["type"] == "runs":
            received.extend(
                (run["seq"] + offset, text, at)
                for run in data["runs"]
                for offset, text in enumerate(run["texts"])
            )
    return received


def summarize_viewers(results: list[list[tuple[int, str, int]]]) -> dict:
    """Latency from the timestamp in each line to its receipt; what each viewer got."""
    latencies_ms: list[float] = []
    first_print = last_print = last_receipt = None
    for received in results:
        for _, text, at in received:
            head = text.split(" ", 1)[0]
            if not head.isdigit():
                continue  # the command line the runner logs first, and the END line
            printed = int(head)
            latencies_ms.append((at - printed) / 1e6)
            first_print = printed if first_print is None else min(first_print, printed)
            last_print = printed if last_print is None else max(last_print, printed)
            last_receipt = at if last_receipt is None else max(last_receipt, at)
    return {
        "viewers": len(results),
        # Per viewer: the distinct seqs received, how many arrived twice, whether
        # it saw the end (a viewer whose socket dropped stops early).
        "seqs": [sorted({seq for seq, _, _ in received}) for received in results],
        "duplicates": sum(len(r) - len({seq for seq, _, _ in r}) for r in results),
        "completed": sum(any(text == END for _, text, _ in r) for r in results),
        "samples": len(latencies_ms),
        "latencies_ms": [round(ms, 3) for ms in latencies_ms],
        "p50_ms": round(common.percentile(latencies_ms, 50), 2),
        "p99_ms": round(common.percentile(latencies_ms, 99), 2),
        "max_ms": round(max(latencies_ms, default=float("nan")), 2),
        "first_print_ns": first_print,
        "last_print_ns": last_print,
        "last_receipt_ns": last_receipt,
    }


async def _viewers_main(url: str, cookie: str, origin: str, count: int) -> dict:
    ready, connected = asyncio.Event(), []
    tasks = [
        asyncio.create_task(_view(url, cookie, origin, ready, connected)) for _ in range(count)
    ]
    while len(connected) < count:
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    results = await asyncio.gather(*tasks)
    cpu = time.process_time()  # before decoding, which is not on the lines' way
    return {**summarize_viewers([decode(frames) for frames in results]), "cpu_s": cpu}


def viewers_process(url: str, cookie: str, origin: str, count: int) -> subprocess.Popen:
    """Start `count` viewers in a child process; returns once all are connected."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_logs", "--view", url, "--origin", origin,
         "--viewers", str(count)],
        cwd=common.ROOT, env={**os.environ, "BENCH_SESSION_COOKIE": cookie},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the viewers could not connect")
    return process


# -- the benchmark ------------------------------------------------------------------


def cpu_usage(server_pid: int, viewers_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, the viewers, this process and its
    children that have ended (the step's printer)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "server": common.cpu_seconds(server_pid),
        "viewers": common.cpu_seconds(viewers_pid),
        "writer": own.ru_utime + own.ru_stime,
        "printer": children.ru_utime + children.ru_stime,
    }


def printer_argv(lines: int, rate: int = 0) -> list[str]:
    """As fast as it can (rate 0), or paced at `rate` lines a second."""
    if not rate:
        code = f"import time; [print(time.time_ns(), i, flush=True) for i in range({lines})]"
    else:
        code = (
            "import time\\nstart = time.perf_counter()\\n"
            f"for i in range({lines}):\\n"
            f"    wait = start + i / {rate} - time.perf_counter()\\n"
            "    time.sleep(wait) if wait > 0 else None\\n"
            "    print(time.time_ns(), i, flush=True)"
        )
        code = f"exec('{code}')"  # one line, so the logged command is one line too
    return [sys.executable, "-c", code]


def run(lines: int = 10_000, viewers: int = 20, rate: int = 0, bursts: int = 1) -> dict:
    """`bursts` runs of the step, the goals on all of their lines together.
    Needs setup_engine_django() first. rate 0: the printer's top speed."""
    each = [burst(lines, viewers, rate) for _ in range(bursts)]
    latencies = [ms for result in each for ms in result.pop("latencies_ms")]
    result = {
        **each[-1],
        "bursts": bursts,
        "samples": len(latencies),
        "p50_ms": round(common.percentile(latencies, 50), 2),
        "p99_ms": round(common.percentile(latencies, 99), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
        "bursts_p50_p99_ms": [(r["p50_ms"], r["p99_ms"]) for r in each],
        "lost": sum(r["lost"] for r in each),
        "duplicates": sum(r["duplicates"] for r in each),
        "completed": min(r["completed"] for r in each),
        "lines_per_s": min(r["lines_per_s"] or 0 for r in each) or None,
        "printer_lines_per_s": round(common.median([r["printer_lines_per_s"] or 0 for r in each])),
        "step_seconds": common.median([r["step_seconds"] for r in each]),
        "print_seconds": common.median([r["print_seconds"] for r in each]),
        # The median burst's CPU, process by process.
        "cpu_ms": {
            who: common.median([r["cpu_ms"][who] for r in each]) for who in each[0]["cpu_ms"]
        },
    }
    result.pop("met_but_p99")
    result["met"] = result["p99_ms"] <= GOAL_P99_MS and all(r["met_but_p99"] for r in each)
    return result


def burst(lines: int, viewers: int, rate: int) -> dict:
    """One run of the step to `viewers` fresh viewers, with its latencies."""
    from deployments import logs
    from deployments.choices import StepStatus
    from deployments.engine import step_context
    from deployments.logs import LogWriter
    from deployments.models import Deployment, LogLine, StepRun
    from deployments.runners.command import CommandRunner
    from portal.cloud.masking import Masker

    argv = printer_argv(lines, rate)
    step = {"name": "Print lines", "kind": "command", "config": {"argv": argv}}
    world = seed("logs", [step])
    deployment = Deployment.request(
        world["release"], world["staging"], world["users"]["alice"], "log latency benchmark"
    )
    cookie = session_cookie(world["users"]["dave"])
    server, port = start_server()
    try:
        origin = f"http://127.0.0.1:{port}"
        watchers = viewers_process(log_socket_url(port, deployment.pk), cookie, origin, viewers)
        writer = LogWriter(deployment.pk, Masker(world["staging"].secret_variables))
        run_row = StepRun.objects.create(
            deployment=deployment, order=1, name=step["name"], kind="command",
            status=StepStatus.RUNNING,
        )  # fmt: skip
        writer.set_step(run_row.pk, step["name"])
        workdir = Path(os.environ["DEPLOY_WORKDIR"]) / str(deployment.pk)
        workdir.mkdir(parents=True, exist_ok=True)
        loaded = Deployment.objects.select_related("environment", "release").get(pk=deployment.pk)
        ctx = step_context(loaded, step["config"], workdir=workdir, log=writer)
        # Where the CPU goes: the server, the viewers, this process (the
        # worker's reader, sender and storer threads) and the printer.
        cpu_before = cpu_usage(server.pid, watchers.pid)
        started = time.perf_counter()
        CommandRunner().run(ctx)
        step_seconds = time.perf_counter() - started
        writer.write(END, "system")
        writer.close()
        stored = LogLine.objects.filter(deployment=deployment).count()
        cpu_after = cpu_usage(server.pid, watchers.pid)
        try:
            out, _ = watchers.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watchers.kill()
            raise RuntimeError(
                f"viewers did not see the end; server log {server.log_path}"
            ) from None
        result = json.loads(out.strip().splitlines()[-1])
        # The viewers' own count stops before they decode what they received.
        cpu_after["viewers"] = result.pop("cpu_s")
        result["cpu_ms"] = {
            who: round((cpu_after[who] - cpu_before[who]) * 1000) for who in cpu_before
        }
    finally:
        stop(server)
    # Every viewer must have every stored line, 1..N, exactly once.
    expected = set(range(1, stored + 1))
    result["lost"] = sum(len(expected - set(seqs)) for seqs in result.pop("seqs"))
    result["lines_per_viewer"] = stored
    span_s = (result["last_receipt_ns"] - result["first_print_ns"]) / 1e9
    print_s = (result["last_print_ns"] - result["first_print_ns"]) / 1e9
    result.update(
        lines_printed=lines,
        paced_lines_per_s=rate or None,
        lines_stored=stored,
        step_seconds=round(step_seconds, 3),
        print_seconds=round(print_s, 3),
        # First print to the last viewer's receipt of the last line.
        lines_per_s=round(lines / span_s) if span_s > 0 else None,
        printer_lines_per_s=round(lines / print_s) if print_s > 0 else None,
        min_flush_gap_s=logs.MIN_FLUSH_GAP,
        max_batch=logs.MAX_BATCH,
        goals={"p99_ms": GOAL_P99_MS, "lost": 0, "lines_per_s": GOAL_LINES_PER_S},
    )
    # The p99 goal is run()'s, on the bursts together.
    result["met_but_p99"] = (
        result["lost"] == 0
        and result["completed"] == viewers
        and result["duplicates"] == 0
        # Flat out, the throughput goal; paced, the printer sets the pace
        # (5,000 lines/s arrive at 4,98x/s): keeping up with it is the test.
        and (result["lines_per_s"] or 0) >= (0.95 * rate if rate else GOAL_LINES_PER_S)
    )
    for key in ("first_print_ns", "last_print_ns", "last_receipt_ns"):
        result.pop(key)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--rate", type=int, default=0, help="paced lines/s (0: flat out)")
    parser.add_argument("--bursts", type=int, default=1, help="runs of the step, pooled")
    parser.add_argument("--view", help=argparse.SUPPRESS)  # internal: be the viewer process
    parser.add_argument("--origin", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="reuse gantry_bench_engine")
    args = parser.parse_args(argv)
    if args.view:
        cookie = os.environ["BENCH_SESSION_COOKIE"]
        summary = asyncio.run(_viewers_main(args.view, cookie, args.origin, args.viewers))
        print(json.dumps(summary), flush=True)
        return 0
    setup_engine_django(fresh=not args.keep)
    result = {"machine": machine(), "logs": run(args.lines, args.viewers, args.rate, args.bursts)}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
