"""Run every benchmark: `make bench`, `python -m bench` or `python bench/run_all.py`.

Builds the gantry_bench database from scratch, measures the pages at 10 % of
the data, grows it to 1,000,000 audit events and 10,000 deployments, measures
everything again, prints a JSON summary and keeps it in bench/results/.
Then the deploy engine's benchmarks (bench_logs, bench_terraform,
bench_release_latency), each in a process of its own on gantry_bench_engine.
Options: --quick (1 % and 10 % instead of 10 % and 100 %; smaller engine runs),
--keep (reuse the existing gantry_bench data instead of recreating it),
--repeats N, --engine-only / --no-engine, --pages-only (the pages alone, on
the data as it stands: a few minutes, to compare two changes or two
neighbours without rebuilding anything).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure_stage(label: str, repeats: int, full: bool) -> dict:
    from bench import bench_append, bench_export, bench_pages, bench_served_pages, bench_verify

    stage: dict = {}
    log(f"{label}: pages")
    stage["pages"] = bench_pages.run()
    if full:
        log(f"{label}: pages through the server")
        stage["served_pages"] = bench_served_pages.run()
    log(f"{label}: verify_chain")
    stage["verify"] = bench_verify.run(repeats=repeats)
    log(f"{label}: exports")
    stage["export"] = bench_export.run(repeats=repeats, trace=True)
    if full:
        log(f"{label}: audit appends")
        stage["append"] = bench_append.run(repeats=repeats)
    return stage


def engine_runs(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(result key, module, arguments) of each deploy-engine benchmark."""
    if quick:
        return [
            ("logs", "bench.bench_logs", ["--lines", "2000", "--viewers", "5", "--bursts", "2"]),
            ("logs_paced", "bench.bench_logs", ["--lines", "2000", "--viewers", "5",
                                                "--rate", "5000"]),
            ("terraform", "bench.bench_terraform", ["--runs", "2"]),
            ("release_latency", "bench.bench_release_latency", ["--repeats", "5"]),
            ("pricing", "bench.bench_pricing", ["--runs", "20"]),
            ("policies", "bench.bench_policies", ["--runs", "20"]),
            ("drift", "bench.bench_drift", ["--environments", "30", "--runs", "1"]),
            ("dashboard", "bench.bench_dashboard", ["--quick"]),
            ("fanout", "bench.bench_fanout", ["--count", "200", "--rounds", "3"]),
            ("fanout_floor", "bench.bench_fanout_floor", ["--clients", "200", "--rounds", "3"]),
        ]  # fmt: skip
    return [
        ("logs", "bench.bench_logs", ["--bursts", "5"]),
        ("logs_paced", "bench.bench_logs", ["--rate", "5000"]),
        ("terraform", "bench.bench_terraform", ["--runs", "5"]),
        ("terraform_rollout", "bench.bench_terraform", ["--runs", "5", "--apply-delay", "3"]),
        ("release_latency", "bench.bench_release_latency", ["--repeats", "20"]),
        ("pricing", "bench.bench_pricing", ["--runs", "50"]),
        ("policies", "bench.bench_policies", ["--runs", "50"]),
        ("drift", "bench.bench_drift", []),
        # The dashboard's own databases (gantry_bench_dash, gantry_bench_fanout).
        ("dashboard", "bench.bench_dashboard", []),
        ("fanout", "bench.bench_fanout", []),
        ("fanout_floor", "bench.bench_fanout_floor", []),
    ]


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while the benchmarks run:
    the figures mean something only next to the load they were measured under."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(os.getloadavg()[0])
            self.done.wait(self.every)

    def summary(self) -> dict:
        self.done.set()
        ordered = sorted(self.samples)
        return {
            "every_seconds": self.every,
            "samples": len(ordered),
            "min": round(ordered[0], 2),
            "median": round(common.median(ordered), 2),
            "max": round(ordered[-1], 2),
        }


def measure_engine(quick: bool) -> dict:
    """Each engine benchmark in its own process: they use their own database
    (gantry_bench_engine, recreated by the first) and start uvicorn and rqworker."""
    engine: dict = {}
    for index, (key, module, arguments) in enumerate(engine_runs(quick)):
        log(f"engine: {key}")
        keep = ["--keep"] if index else []
        done = subprocess.run(
            [sys.executable, "-m", module, *arguments, *keep],
            cwd=common.ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            engine[key] = {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
            log(f"engine: {key} failed:\n{done.stderr[-3000:]}")
            continue
        try:
            result = json.loads(done.stdout)
            engine[key] = {"machine": result.pop("machine"), **next(iter(result.values()))}
        except (ValueError, KeyError, StopIteration) as exc:  # keep the others' results
            engine[key] = {"error": [f"unreadable result: {exc!r}"]}
            log(f"engine: {key}: unreadable result {done.stdout[-500:]!r}")
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 %% and 10 %% of the full size")
    parser.add_argument("--keep", action="store_true", help="reuse the existing bench data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine-only", action="store_true", help="only the deploy engine")
    parser.add_argument("--no-engine", action="store_true", help="skip the deploy engine")
    parser.add_argument(
        "--pages-only", action="store_true", help="only the pages, on the data as it stands"
    )
    args = parser.parse_args(argv)
    if args.pages_only:
        args.keep = args.no_engine = True

    started = time.perf_counter()
    load = LoadSampler()
    load.start()
    summary: dict = {"machine": None, "stages": {}}
    if not args.engine_only:
        common.setup_django(fresh=not args.keep)
        summary["machine"] = common.machine()
    small, large = (0.01, 0.1) if args.quick else (0.1, 1.0)
    if args.pages_only:
        from bench import bench_pages, bench_served_pages
        from environments.models import Environment

        if not Environment.objects.filter(application__slug="app-00").exists():
            raise SystemExit(
                "--pages-only measures the benchmark data as it stands, and there is none: "
                "run `make bench` (or `python -m bench --no-engine`) first"
            )
        settled = common.settle(common.bench_database_url())
        log(f"pages on the data as it stands; settled: {settled}")
        summary["stages"]["as kept"] = {"settled": settled, "pages": bench_pages.run(),
                                        "served_pages": bench_served_pages.run()}  # fmt: skip
    sizes = ((small, False), (large, True))
    for fraction, full in () if args.engine_only or args.pages_only else sizes:
        from bench import dataset

        label = f"{round(fraction * 100)}%"
        log(f"{label}: generating data")
        generated = dataset.grow_to(fraction)
        log(f"{label}: {generated}")
        # Measure the pages, not PostgreSQL's clean-up of the rows just
        # written (autovacuum and a checkpoint of ~1 GB on the same two cores).
        settled = common.settle(common.bench_database_url())
        log(f"{label}: settled: {settled}")
        summary["stages"][label] = {"generated": generated, "settled": settled,
                                    **measure_stage(label, args.repeats, full)}  # fmt: skip
    if not args.no_engine:
        if not args.engine_only:
            summary["settled"] = common.settle(common.bench_database_url())
            log(f"settled: {summary['settled']}")
        summary["engine"] = measure_engine(args.quick)
    summary["total_seconds"] = round(time.perf_counter() - started)
    summary["load_average"] = load.summary()
    # What ran beside the benchmark, and at what CPU share (scripts/bench-under-load.sh).
    summary["neighbours"] = os.environ.get("BENCH_NEIGHBOURS", "")
    log(f"load average (1 min) during the run: {summary['load_average']}")

    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS_DIR / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
