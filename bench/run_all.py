"""Run every benchmark: `make bench`, `python -m bench` or `python bench/run_all.py`.

Builds the gantry_bench database from scratch, measures the pages at 10 % of
the data, grows it to 1,000,000 audit events and 10,000 deployments, measures
everything again, prints a JSON summary and keeps it in bench/results/.
Options: --quick (1 % and 10 % instead of 10 % and 100 %), --keep (reuse the
existing gantry_bench data instead of recreating it), --repeats N.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure_stage(label: str, repeats: int, full: bool) -> dict:
    from bench import bench_append, bench_export, bench_pages, bench_verify

    stage: dict = {}
    log(f"{label}: pages")
    stage["pages"] = bench_pages.run()
    log(f"{label}: verify_chain")
    stage["verify"] = bench_verify.run(repeats=repeats)
    log(f"{label}: exports")
    stage["export"] = bench_export.run(repeats=repeats, trace=True)
    if full:
        log(f"{label}: audit appends")
        stage["append"] = bench_append.run(repeats=repeats)
    return stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 %% and 10 %% of the full size")
    parser.add_argument("--keep", action="store_true", help="reuse the existing bench data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    common.setup_django(fresh=not args.keep)
    from bench import dataset

    small, large = (0.01, 0.1) if args.quick else (0.1, 1.0)
    summary: dict = {"machine": common.machine(), "stages": {}}
    for fraction, full in ((small, False), (large, True)):
        label = f"{round(fraction * 100)}%"
        log(f"{label}: generating data")
        generated = dataset.grow_to(fraction)
        log(f"{label}: {generated}")
        summary["stages"][label] = {"generated": generated,
                                    **measure_stage(label, args.repeats, full)}  # fmt: skip
    summary["total_seconds"] = round(time.perf_counter() - started)

    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS_DIR / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
