"""Dashboard fan-out: 1,000 dashboards connected to one ASGI process (uvicorn,
as in production) receive an alarm transition. Goal: p99 delivery <= 100 ms;
reports the memory per connection (the server's RSS delta / connections).

The transition is real: a CloudWatch alarm of the sandbox's moto server is set
to ALARM (then OK, alternately, for each round) and `poll_environment` stores
it and broadcasts after commit. Latency runs from the broadcast (the moment
`environments.live` publishes, noted by a wrapper in this process) to each
client's receipt; the clients are separate processes, as browsers would be.
Both channel layers are measured for the "broadcast" alias: Redis pub/sub
(the setting) and the default RedisChannelLayer (one message per member).

python -m bench.bench_fanout [--clients 1000] [--rounds 5] [--layers pubsub,core]
FANOUT_GC=off python -m bench.bench_fanout ...   # an experiment: the collector off
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

FANOUT_DB_NAME = "gantry_bench_fanout"
FANOUT_REDIS_URL = "redis://127.0.0.1:6379/8"
GOAL_P99_MS = 100.0
CLIENT_PROCESSES = 4
# Handshakes in flight per client process: a browser-like trickle rather than
# a burst (a burst beyond the listen backlog is reset; dashboards retry as
# browsers would).
CONNECT_AT_ONCE = 10
# Per message, counted from a socket's connection: the first broadcast comes
# only once all the others are connected (about 30 s for 1,000 here).
RECEIVE_TIMEOUT = 180
CONNECT_ATTEMPTS = 5


def configure() -> None:
    common.configure_environment()
    parts = urlsplit(common.bench_database_url())
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{FANOUT_DB_NAME}"))
    os.environ["REDIS_URL"] = FANOUT_REDIS_URL
    os.environ["CHANNEL_PREFIX"] = "gantry-bench-fanout"
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"


def use_layer(channel_layers: dict, layer: str) -> None:
    """ "core": the broadcast alias becomes the default RedisChannelLayer."""
    if layer == "core":
        channel_layers["broadcast"] = dict(channel_layers["default"])


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the ASGI server with the chosen layer (a child process) --------------------------------


def serve(port: int, layer: str) -> None:
    configure()
    from portal import settings as portal_settings  # the module Django is about to read

    use_layer(portal_settings.CHANNEL_LAYERS, layer)
    trace_server(os.environ["FANOUT_TRACE"])
    if os.environ.get("FANOUT_GC") == "off":  # an experiment: is the collector the tail?
        import gc

        gc.disable()
    import uvicorn

    # The production command line (Dockerfile), in this process so the layer
    # choice above applies.
    uvicorn.run(
        "portal.asgi:application", host="127.0.0.1", port=port, lifespan="off",
        log_level="warning", access_log=False, ws_per_message_deflate=False,
    )  # fmt: skip


# -- where a round's time goes (the server's and the clients' side) ------------------


def trace_server(path: str) -> None:
    """Note, in `path`, when the hub heard each change and when it had written
    it to every socket, and every full collection of the process's garbage
    collector: a late round is then placed on the way to the server, in it,
    or after it (the clients)."""
    import gc

    from portal.dashboard_hub import DashboardHub as Hub

    trace = open(path, "a", buffering=1)  # noqa: SIM115 - lives with the server
    tell = Hub.tell

    async def traced_tell(self, event: dict) -> None:
        heard = time.time_ns()
        await tell(self, event)
        trace.write(json.dumps({"tell": [heard, time.time_ns()]}) + "\n")

    Hub.tell = traced_tell
    gc.callbacks.append(full_collections(lambda span: trace.write(json.dumps({"gc": span}) + "\n")))


def full_collections(note: Callable[[list[int]], object]) -> Callable:
    """A gc callback calling note([start ns, end ns]) after each full collection."""
    started: list[int] = []

    def callback(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.time_ns()]
        elif started:
            note([started.pop(), time.time_ns()])

    return callback


def read_trace(path: str) -> tuple[list[list[int]], list[list[int]]]:
    """The server's (heard, written) pairs and full collections, in order."""
    tells, collections = [], []
    for line in Path(path).read_text().splitlines():
        entry = json.loads(line)
        (tells if "tell" in entry else collections).append(entry.get("tell") or entry["gc"])
    return tells, collections


def overlapping_ms(spans: list[list[int]], start: int, end: int) -> list[float]:
    """The durations (ms) of the collections that ran between start and end."""
    return [round((b - a) / 1e6, 1) for a, b in spans if b >= start and a <= end]


def start_server(layer: str) -> tuple[subprocess.Popen, int]:
    from bench.bench_logs import free_port, wait_listening

    port = free_port()
    log = open(f"/tmp/bench-fanout-server-{layer}.log", "w")  # noqa: SIM115 - lives with the server
    trace = Path(f"/tmp/bench-fanout-server-{layer}.trace")
    trace.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_fanout", "--serve", str(port), "--layers", layer],
        cwd=common.ROOT, env={**os.environ, "FANOUT_TRACE": str(trace)},
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    process.log_path = log.name
    process.trace_path = str(trace)
    wait_listening(process, port)
    return process, port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the clients (child processes) ---------------------------------------------------


async def _dashboard(url, headers, connected: list, rounds: int, gate) -> list[int]:
    import aiohttp

    receipts: list[int] = []
    async with aiohttp.ClientSession() as http:
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                async with gate:
                    ws = await http.ws_connect(
                        url, headers=headers, heartbeat=None, compress=common.WS_COMPRESS
                    )
                break
            except aiohttp.ClientOSError:
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        connected.append(1)
        try:
            while len(receipts) < rounds:
                # aiohttp's own timeout: wait_for would make a task per message,
                # in the processes that stand for the browsers.
                message = await ws.receive(timeout=RECEIVE_TIMEOUT)
                if message.type != aiohttp.WSMsgType.TEXT:
                    print(f"socket ended: {message.type.name} {message.data}", file=sys.stderr)
                    break
                receipts.append(time.time_ns())
        except TimeoutError:
            print(f"no message within {RECEIVE_TIMEOUT} s after {len(receipts)} "
                  f"(attempt {attempt + 1})", file=sys.stderr)  # fmt: skip
        await ws.close()
    return receipts


async def _clients_main(url: str, cookie: str, origin: str, count: int, rounds: int) -> list:
    headers = {"Cookie": f"sessionid={cookie}", "Origin": origin}
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    connected: list = []
    tasks = [
        asyncio.create_task(_dashboard(url, headers, connected, rounds, gate)) for _ in range(count)
    ]
    while len(connected) < count and not any(task.done() for task in tasks):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    return await asyncio.gather(*tasks, return_exceptions=True)


def clients(url: str, origin: str, count: int, rounds: int) -> None:
    import gc

    raise_open_files()
    collections: list[list[int]] = []
    gc.callbacks.append(full_collections(collections.append))
    results = asyncio.run(
        _clients_main(url, os.environ["BENCH_SESSION_COOKIE"], origin, count, rounds)
    )
    failed = [r for r in results if not isinstance(r, list)]
    if failed:
        print(f"{len(failed)} dashboards failed: {failed[0]!r}", file=sys.stderr, flush=True)
    receipts = [r if isinstance(r, list) else [] for r in results]
    print(json.dumps({"receipts": receipts, "gc": collections}), flush=True)


# -- the benchmark -------------------------------------------------------------------


def seed() -> dict:
    """fraud-detector with dev/staging/production, dave viewing all three,
    staging watching the sandbox's CloudWatch alarms (moto server)."""
    from django.contrib.auth.models import User

    from deployments import sandbox
    from environments.alarms import poll_environment
    from environments.choices import Tier
    from environments.models import Application, Environment
    from portal.core.models import Membership

    server, endpoint = sandbox.start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    aws = sandbox.create_demo_aws(endpoint, "staging")
    app = Application.objects.create(slug="fraud-detector", name="Fraud Detector")
    dave = User.objects.create_user("dave", "dave@example.com", None)
    environments = {}
    for order, (slug, tier) in enumerate(
        (("dev", Tier.DEVELOPMENT), ("staging", Tier.STAGING), ("production", Tier.PRODUCTION)),
        start=1,
    ):
        environments[slug] = Environment.objects.create(
            application=app, slug=slug, name=slug.title(), order=order, tier=tier
        )
        Membership.objects.create(user=dave, environment=environments[slug], role="viewer")
    staging = environments["staging"]
    prefix = aws["alarms"][0].rsplit("-", 1)[0] + "-"
    staging.alarm_sources = {"cloudwatch": {"alarm_prefix": prefix}}
    staging.save(update_fields=["alarm_sources"])
    poll_environment(staging)
    # The setup's own card updates and broadcasts (they run in the background)
    # are done before the benchmark starts counting broadcasts.
    from environments import live

    live.flush()
    return {"moto": server, "endpoint": endpoint, "staging": staging, "alarm": aws["alarms"][0],
            "dave": dave}  # fmt: skip


def measure(world: dict, layer: str, count: int, rounds: int) -> dict:
    import boto3
    from channels.layers import channel_layers
    from django.conf import settings

    from bench.bench_logs import session_cookie, stop
    from environments import live
    from environments.alarms import poll_environment
    from environments.models import Alarm

    settings.CHANNEL_LAYERS = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    use_layer(settings.CHANNEL_LAYERS, layer)
    channel_layers.backends.clear()
    broadcasts: list[int] = []
    original = live._broadcast

    publish_ms: list[float] = []

    def timed_broadcast(environment_id: int, what: str) -> None:
        broadcasts.append(time.time_ns())
        original(environment_id, what)
        publish_ms.append(round((time.time_ns() - broadcasts[-1]) / 1e6, 1))

    live._broadcast = timed_broadcast
    cookie = session_cookie(world["dave"])
    server, port = start_server(layer)
    watchers: list[subprocess.Popen] = []
    try:
        origin = f"http://127.0.0.1:{port}"
        url = f"ws://127.0.0.1:{port}/ws/dashboard/"
        # Warm up: Django's first request and first socket load lazily.
        subprocess.run([sys.executable, "-m", "bench.bench_fanout", "--clients", url,
                        "--origin", origin, "--count", "1", "--rounds", "0"],
                       cwd=common.ROOT, env={**os.environ, "BENCH_SESSION_COOKIE": cookie},
                       capture_output=True, timeout=60, check=True)  # fmt: skip
        time.sleep(0.5)
        before = rss_kib(server.pid)
        started = time.perf_counter()
        share = [count // CLIENT_PROCESSES + (i < count % CLIENT_PROCESSES)
                 for i in range(CLIENT_PROCESSES)]  # fmt: skip
        for n in share:
            watchers.append(subprocess.Popen(
                [sys.executable, "-m", "bench.bench_fanout", "--clients", url, "--origin", origin,
                 "--count", str(n), "--rounds", str(rounds)],
                cwd=common.ROOT, env={**os.environ, "BENCH_SESSION_COOKIE": cookie},
                stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for watcher in watchers:
            if watcher.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process could not connect")
        connect_seconds = time.perf_counter() - started
        time.sleep(1.0)  # let the subscriptions settle
        after = rss_kib(server.pid)
        cloudwatch = boto3.client(
            "cloudwatch", endpoint_url=world["endpoint"], region_name="ca-central-1"
        )
        poll_ms = []
        for n in range(rounds):
            stored = Alarm.objects.get(environment=world["staging"], name=world["alarm"]).state
            state = "OK" if stored == "ALARM" else "ALARM"  # a transition every round
            cloudwatch.set_alarm_state(
                AlarmName=world["alarm"], StateValue=state, StateReason=f"bench round {n}"
            )
            polled = time.perf_counter()
            transitions = poll_environment(world["staging"])
            poll_ms.append((time.perf_counter() - polled) * 1000)
            assert transitions, "the poll found no transition"
            time.sleep(1.0)
        receipts, client_collections = [], []
        for watcher in watchers:
            out, _ = watcher.communicate(timeout=60)
            reported = json.loads(out.strip().splitlines()[-1])
            receipts.extend(reported["receipts"])
            client_collections.extend(reported["gc"])
    finally:
        for watcher in watchers:
            if watcher.poll() is None:
                watcher.kill()
        live._broadcast = original
        stop(server)
    tells, server_collections = read_trace(server.trace_path)
    latencies = [
        (received[n] - broadcasts[n]) / 1e6
        for received in receipts
        for n in range(min(len(received), len(broadcasts)))
    ]
    delivered = sum(len(r) for r in receipts)
    per_round = [
        [(received[n] - broadcasts[n]) / 1e6 for received in receipts if len(received) > n]
        for n in range(len(broadcasts))
    ]
    # Each round from its broadcast: when the server's hub heard it and had
    # written it to every socket, and the full collections (ms each) of the
    # server and of the client processes while it was on its way.
    trail = []
    for n, broadcast in enumerate(broadcasts):
        last = max((received[n] for received in receipts if len(received) > n), default=broadcast)
        heard, written = tells[n] if n < len(tells) else (None, None)
        trail.append({
            "heard_ms": None if heard is None else round((heard - broadcast) / 1e6, 1),
            "written_ms": None if written is None else round((written - broadcast) / 1e6, 1),
            "last_ms": round((last - broadcast) / 1e6, 1),
            "server_gc_ms": overlapping_ms(server_collections, broadcast, last),
            "clients_gc_ms": overlapping_ms(client_collections, broadcast, last),
        })  # fmt: skip
    return {
        "publish_ms": publish_ms,
        "rounds_p50_p99_ms": [
            (round(common.percentile(r, 50), 1), round(common.percentile(r, 99), 1))
            for r in per_round
            if r
        ],
        "rounds_trail": trail,
        "server_full_collections": len(server_collections),
        "layer": layer,
        "clients": count,
        "rounds": rounds,
        "broadcasts": len(broadcasts),
        "delivered": delivered,
        "lost": count * rounds - delivered,
        "p50_ms": round(common.percentile(latencies, 50), 2),
        "p99_ms": round(common.percentile(latencies, 99), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
        "poll_ms_median": round(common.median(poll_ms), 1),
        "connect_seconds": round(connect_seconds, 1),
        "server_rss_mib_before": round(before / 1024, 1),
        "server_rss_mib_after": round(after / 1024, 1),
        "kib_per_connection": round((after - before) / count, 1),
        "met": bool(latencies)
        and common.percentile(latencies, 99) <= GOAL_P99_MS
        and delivered == count * rounds,
    }


def setup_django() -> None:
    configure()
    common.recreate_database(os.environ["DATABASE_URL"], FANOUT_DB_NAME)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run(count: int = 1000, rounds: int = 5, layers: tuple[str, ...] = ("pubsub", "core")) -> dict:
    open_files = raise_open_files()
    setup_django()
    from bench.bench_logs import machine

    world = seed()
    try:
        result = {"machine": machine(), "open_files_limit": open_files}
        for layer in layers:
            result[layer] = measure(world, layer, count, rounds)
            print(json.dumps(result[layer]), file=sys.stderr, flush=True)
        result["goal_p99_ms"] = GOAL_P99_MS
        result["machine"]["loadavg_after"] = os.getloadavg()
    finally:
        world["moto"].stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="dashboards connected")
    parser.add_argument("--rounds", type=int, default=5, help="alarm transitions broadcast")
    parser.add_argument("--layers", default="pubsub,core")
    # run_all passes the engine benchmarks' --keep (their database): not ours.
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: be the server
    parser.add_argument("--clients", help=argparse.SUPPRESS)  # internal: be a client process
    parser.add_argument("--origin", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.layers)
        return 0
    if args.clients:
        clients(args.clients, args.origin, args.count, args.rounds)
        return 0
    result = {"fanout": run(args.count, args.rounds, tuple(args.layers.split(",")))}
    result["machine"] = result["fanout"].pop("machine")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
