"""Render a bench/results/*.json summary as the Markdown tables of docs/PERFORMANCE.md.

python -m bench.report                 # the newest result
python -m bench.report path/to/file.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return str(value)


def render(summary: dict) -> str:
    stages = summary["stages"]
    labels = list(stages)
    out = []
    out.append("| measure | " + " | ".join(labels) + " | goal |")
    out.append("|---|" + "---|" * len(labels) + "---|")

    def row(name: str, getter, goal: str = "") -> None:
        cells = []
        for label in labels:
            try:
                cells.append(_fmt(getter(stages[label])))
            except (KeyError, TypeError):
                cells.append("–")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {goal} |")

    row("audit events", lambda s: s["export"]["rows_in_trail"])
    row("verify_chain, events/s (median)", lambda s: s["verify"]["events_per_s_median"],
        "≥ 100,000")  # fmt: skip
    row("verify, proposed change, events/s", lambda s: s["verify"]["proposed_events_per_s_median"])
    row("CSV export, rows/s (median)", lambda s: s["export"]["csv"]["rows_per_s_median"],
        "≥ 200,000")  # fmt: skip
    row("CSV export, tracemalloc peak MiB", lambda s: s["export"]["csv"]["tracemalloc_peak_mib"],
        "constant")  # fmt: skip
    row(
        "CSV export, RSS before → high MiB",
        lambda s: f"{s['export']['csv']['rss_before_mib']} → {s['export']['csv']['rss_high_mib']}",
    )
    row("JSON export, rows/s (median)", lambda s: s["export"]["json"]["rows_per_s_median"])
    row("JSON export, tracemalloc peak MiB", lambda s: s["export"]["json"]["tracemalloc_peak_mib"],
        "constant")  # fmt: skip
    row("audit.record appends/s (median)", lambda s: s["append"]["events_per_s_median"])
    out.append("")

    for user in ("root", "viewer"):
        out.append(f"Pages as `{user}`: queries, p50 / p95 ms (goal p95 ≤ 50 ms, queries flat)")
        out.append("")
        out.append("| page | " + " | ".join(labels) + " |")
        out.append("|---|" + "---|" * len(labels))
        pages = stages[labels[-1]]["pages"][user]
        for page in pages:
            cells = []
            for label in labels:
                result = stages[label]["pages"][user].get(page, {})
                if "skipped" in result:
                    cells.append(f"skipped: {result['skipped']}")
                else:
                    cells.append(f"{result.get('queries')} q, {_fmt(result.get('p50_ms'))} / "
                                 f"{_fmt(result.get('p95_ms'))}")  # fmt: skip
            out.append(f"| {page} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv:
        path = Path(argv[0])
    else:
        candidates = sorted(RESULTS_DIR.glob("bench-*.json"))
        if not candidates:
            print("no results yet: run `make bench`", file=sys.stderr)
            return 1
        path = candidates[-1]
    print(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
