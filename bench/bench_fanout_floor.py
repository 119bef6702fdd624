"""The floor under the fan-out benchmark: one asyncio process writes one
small message (the size of a dashboard's "changed" frame) to each of N TCP
sockets on loopback, with nothing else on the way (no channel layer, no
ASGI server, no WebSocket framing). Latency runs from the first write to each
client's receipt; the clients are 4 other processes, as in bench_fanout.

What this takes per socket is what any single-process server pays on this
machine before doing any work of its own.

python -m bench.bench_fanout_floor [--clients 1000] [--rounds 5]   # prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

CLIENT_PROCESSES = 4
# A dashboard's message as the server frames it: a 2-byte header and the JSON.
MESSAGE = b"\x81\x3e" + b'{"type": "changed", "environment": 42, "what": "alarms"}     '


def _client(port: int, count: int, rounds: int, results) -> None:
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


async def _serve(clients: int, rounds: int) -> dict:
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
        multiprocessing.Process(target=_client, args=(port, share, rounds, results))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    # run_all passes the engine benchmarks' --keep (their database): not ours.
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from bench.bench_logs import machine

    result = asyncio.run(_serve(args.clients, args.rounds))
    print(json.dumps({"fanout_floor": result, "machine": machine()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
