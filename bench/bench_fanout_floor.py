"""The floors under the fan-out benchmarks: what delivering one small message
to N sockets costs with no framework of ours on the way.

"pubsub" (the floor the fan-out goal is set against): a server process on
the event loop the portal's server runs on (uvloop), subscribed to one Redis
channel, answers each WebSocket handshake by hand and, on every message
published to that channel, writes one pre-built WebSocket frame (the size of
a dashboard's "changed" message) to every socket. The clients are
bench_fanout's own (aiohttp, 4 processes, the same handshake trickle), and
latency runs, as there, from the PUBLISH to each client's receipt. So the
Redis hop, the kernel, the event loop and the clients' WebSocket parsing are
all in it; the portal's fan-out adds its channel layer, ASGI server,
consumer and hub on top, and that difference is what the goal bounds.

"tcp": one asyncio process writes the frame's bytes to N plain TCP sockets
read with `readexactly` (no Redis, no WebSocket parsing on either side);
kept to compare with earlier runs.

python -m bench.bench_fanout_floor [--clients 1000] [--rounds 5] [--kinds pubsub,tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

CLIENT_PROCESSES = 4
TEXT = b'{"type": "changed", "environment": 42, "what": "alarms"}     '
# A dashboard's message as a server frames it: FIN + text opcode, length, the JSON.
MESSAGE = b"\x81" + bytes([len(TEXT)]) + TEXT
REDIS_URL = "redis://127.0.0.1:6379/8"
CHANNEL = "gantry-bench-fanout-floor"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- "tcp" ----------------------------------------------------------------------


def _tcp_client(port: int, count: int, rounds: int, results) -> None:
    async def main() -> list[float]:
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
        received: list[float] = []

        async def read(reader) -> None:
            for _ in range(rounds):
                await reader.readexactly(len(MESSAGE))
                received.append(time.time())

        await asyncio.gather(*(read(reader) for reader, _ in streams))
        return received

    results.put(asyncio.run(main()))


async def _tcp(clients: int, rounds: int) -> dict:
    writers: list[asyncio.StreamWriter] = []
    everyone = asyncio.Event()

    async def accept(reader, writer) -> None:
        writers.append(writer)
        if len(writers) == clients:
            everyone.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, backlog=clients)
    port = server.sockets[0].getsockname()[1]
    results: multiprocessing.Queue = multiprocessing.Queue()
    share = clients // CLIENT_PROCESSES
    processes = [
        multiprocessing.Process(target=_tcp_client, args=(port, share, rounds, results))
        for _ in range(CLIENT_PROCESSES)
    ]
    for process in processes:
        process.start()
    await asyncio.wait_for(everyone.wait(), 120)
    sent: list[float] = []
    write_ms: list[float] = []
    for _ in range(rounds):
        await asyncio.sleep(0.5)
        started = time.time()
        for writer in writers:
            writer.write(MESSAGE)
        write_ms.append((time.time() - started) * 1000)
        sent.append(started)
    receipts: list[float] = []
    for _ in processes:
        receipts += await asyncio.get_running_loop().run_in_executor(None, results.get)
    for process in processes:
        process.join()
    server.close()
    # Each client's n-th receipt belongs to the n-th round: rounds are 0.5 s apart.
    latencies = []
    for at in receipts:
        round_start = max(s for s in sent if s <= at)
        latencies.append((at - round_start) * 1000)
    latencies.sort()
    return {
        "clients": clients,
        "rounds": rounds,
        "delivered": len(latencies),
        "p50_ms": round(common.median(latencies), 1),
        "p99_ms": round(common.percentile(latencies, 99), 1),
        "write_loop_ms_median": round(common.median(write_ms), 1),
    }


# -- "pubsub": the server (a child process) ----------------------------------------


async def _serve_pubsub(port: int) -> None:
    import redis.asyncio

    writers: list[asyncio.StreamWriter] = []

    async def handshake(reader, writer) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writers.append(writer)
        # Whatever the client sends from now on (nothing, then its close) is read and dropped.
        while await reader.read(4096):
            pass
        writers.remove(writer)
        writer.close()

    server = await asyncio.start_server(handshake, "127.0.0.1", port, backlog=1024)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    print("listening", flush=True)
    async with server:
        async for message in pubsub.listen():
            if message["type"] == "message":
                for writer in list(writers):
                    writer.write(MESSAGE)


def serve_pubsub(port: int) -> None:
    import uvloop

    uvloop.run(_serve_pubsub(port))


def _pubsub(clients: int, rounds: int) -> dict:
    import redis

    from bench.bench_fanout import CLIENT_PROCESSES as PROCESSES
    from bench.bench_fanout import raise_open_files
    from bench.bench_logs import free_port

    raise_open_files()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_fanout_floor", "--serve-pubsub", str(port)],
        cwd=common.ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchers: list[subprocess.Popen] = []
    publisher = redis.Redis.from_url(REDIS_URL)
    try:
        if server.stdout.readline().strip() != "listening":
            raise RuntimeError("the floor server did not start")
        url, origin = f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{port}"
        # The fan-out benchmark's clients, as they are (the cookie is not looked at here).
        env = {**os.environ, "BENCH_SESSION_COOKIE": "floor"}
        share = [clients // PROCESSES + (i < clients % PROCESSES) for i in range(PROCESSES)]
        for n in share:
            watchers.append(subprocess.Popen(
                [sys.executable, "-m", "bench.bench_fanout", "--clients", url, "--origin", origin,
                 "--count", str(n), "--rounds", str(rounds)],
                cwd=common.ROOT, env=env, stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for watcher in watchers:
            if watcher.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process could not connect")
        time.sleep(1.0)
        published: list[int] = []
        for _ in range(rounds):
            published.append(time.time_ns())
            publisher.publish(CHANNEL, b"changed")
            time.sleep(1.0)
        receipts: list[list[int]] = []
        for watcher in watchers:
            out, _ = watcher.communicate(timeout=60)
            receipts.extend(json.loads(out.strip().splitlines()[-1])["receipts"])
    finally:
        for process in (*watchers, server):
            if process.poll() is None:
                process.kill()
                process.wait()
    latencies = sorted(
        (received[n] - published[n]) / 1e6
        for received in receipts
        for n in range(min(len(received), rounds))
    )
    return {
        "clients": clients,
        "rounds": rounds,
        "delivered": len(latencies),
        "p50_ms": round(common.median(latencies), 1),
        "p99_ms": round(common.percentile(latencies, 99), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default="pubsub,tcp")
    # run_all passes the engine benchmarks' --keep (their database): not ours.
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-pubsub", type=int, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.serve_pubsub:
        serve_pubsub(args.serve_pubsub)
        return 0
    from bench.bench_logs import machine

    result: dict = {}
    for kind in args.kinds.split(","):
        if kind == "pubsub":
            result["pubsub"] = _pubsub(args.clients, args.rounds)
        elif kind == "tcp":
            result["tcp"] = asyncio.run(_tcp(args.clients, args.rounds))
        print(json.dumps({kind: result[kind]}), file=sys.stderr, flush=True)
    print(json.dumps({"fanout_floor": result, "machine": machine()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
