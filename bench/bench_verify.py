"""verify_chain() over the whole trail: events per second (goal >= 100,000/s).

Measures, in the same run and alternating so that a change of load on the
machine hits both alike:

- the command's default (`manage.py verify_audit`): verify_chain(workers=N)
  with N = number of CPUs, at most 4 — `events_per_s_median`, the goal figure;
- the sequential walk in one process, verify_chain(workers=1);
- once, the reference walk (Django's values_list() + canonical()), which is
  what verify_chain() did before the fast path: the yardstick.

All three must agree that the bench chain is intact.

On its own, without the pages and exports: `python -m bench.bench_verify`
(builds only the audit trail in gantry_bench: the catalog and 1,000,000
events; `--keep` reuses what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL = 100_000


def _timed(verify: Callable) -> tuple[float, int]:
    started = time.perf_counter()
    check = verify()
    elapsed = time.perf_counter() - started
    if not check.ok:
        raise SystemExit(f"the bench chain is broken: {check.reason}")
    return check.checked / elapsed, check.checked


def _summary(rates: list[float]) -> tuple[int, list[int]]:
    ordered = sorted(rates)
    return round(ordered[len(ordered) // 2]), [round(r) for r in ordered]


def run(repeats: int = 3, reference: bool = True) -> dict:
    from portal.core.audit_chain import iter_chain, verify_chain
    from portal.core.management.commands.verify_audit import default_workers

    workers = default_workers()
    parallel, sequential, checked = [], [], 0
    load_before = os.getloadavg()
    for _ in range(repeats):
        rate, checked = _timed(lambda: verify_chain(workers=workers))
        parallel.append(rate)
        rate, _ = _timed(lambda: verify_chain(workers=1))
        sequential.append(rate)
    load_after = os.getloadavg()
    median, rates = _summary(parallel)
    seq_median, seq_rates = _summary(sequential)
    result = {
        "events": checked,
        "runs": repeats,
        "workers": workers,
        "events_per_s_median": median,
        "events_per_s_all": rates,
        "seconds_median": round(checked / median, 2),
        "goal_events_per_s": GOAL,
        "meets_goal": median >= GOAL,
        "sequential_events_per_s_median": seq_median,
        "sequential_events_per_s_all": seq_rates,
        "sequential_meets_goal": seq_median >= GOAL,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    if reference:
        rate, _ = _timed(lambda: verify_chain(rows=iter_chain()))
        result["reference_events_per_s"] = round(rate)
    return result


def _build_trail(events: int) -> dict:
    """The catalog and `events` chained audit events; nothing else (verify reads nothing else)."""
    from django.db import connection

    from bench import dataset
    from portal.core.models import AuditEvent

    have = AuditEvent.objects.count()
    started = time.perf_counter()
    added = dataset.grow_audit(dataset.ensure_catalog(), events)
    with connection.cursor() as cursor:
        # As run_all does after a bulk load: reads are not slowed by hint-bit writes.
        cursor.execute("VACUUM ANALYZE portal_auditevent")
    return {"events_before": have, "events_added": added,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from bench import common

    parser = argparse.ArgumentParser(description="verify_chain() alone, on gantry_bench")
    parser.add_argument("--keep", action="store_true", help="reuse the existing bench data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference walk")
    args = parser.parse_args(argv)

    common.setup_django(fresh=not args.keep)
    summary: dict = {"machine": common.machine(), "trail": _build_trail(args.events)}
    summary["verify"] = run(repeats=args.repeats, reference=not args.no_reference)
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS_DIR / f"verify-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
