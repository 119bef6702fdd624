"""The audit exports through the real views (Django's test Client), consuming
the streamed response: rows per second (goal >= 200,000/s) and memory, which
must not grow with the number of rows."""

from __future__ import annotations

import time
import tracemalloc

from bench.common import peak_rss_mib, rss_mib

GOAL = 200_000


def _count_rows(chunk: bytes, fmt: str) -> int:
    if fmt == "csv":
        return chunk.count(b"\n")
    # json_build_object writes "key" : value; the portable path "key": value.
    return chunk.count(b'{"seq" : ') + chunk.count(b'{"seq": ')


def _consume(client, url: str, fmt: str, trace: bool = False) -> dict:
    rss_before = rss_mib()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    assert response.streaming
    size = lines = 0
    rss_high = rss_before
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += _count_rows(chunk, fmt)
        rss_high = max(rss_high, rss_mib())
    response.close()
    elapsed = time.perf_counter() - started
    result = {
        "seconds": elapsed,
        "bytes": size,
        "lines": lines,
        "rss_before_mib": round(rss_before, 1),
        "rss_high_mib": round(max(rss_high, rss_mib()), 1),
    }
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["tracemalloc_peak_mib"] = round(peak / 2**20, 2)
    return result


def run(repeats: int = 3, formats: tuple[str, ...] = ("csv", "json"), trace: bool = True) -> dict:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    from portal.core.models import AuditEvent

    client = Client()
    client.force_login(User.objects.get(username="root"))
    rows = AuditEvent.objects.count()
    results: dict = {"rows_in_trail": rows}
    for fmt in formats:
        url = reverse(f"audit-export-{fmt}")
        runs = [_consume(client, url, fmt) for _ in range(repeats)]
        rates = sorted(r["lines"] / r["seconds"] for r in runs)
        median = rates[len(rates) // 2]
        results[fmt] = {
            "rows_exported": runs[0]["lines"] - (1 if fmt == "csv" else 0),
            "mib": round(runs[0]["bytes"] / 2**20, 1),
            "rows_per_s_median": round(median),
            "rows_per_s_all": [round(r) for r in rates],
            "rss_before_mib": runs[-1]["rss_before_mib"],
            "rss_high_mib": runs[-1]["rss_high_mib"],
        }
        if fmt == "csv":
            results[fmt].update(goal_rows_per_s=GOAL, meets_goal=median >= GOAL)
        if trace:
            # A separate, slower run: tracemalloc counts every Python allocation.
            traced = _consume(client, url, fmt, trace=True)
            results[fmt]["tracemalloc_peak_mib"] = traced["tracemalloc_peak_mib"]
    results["process_peak_rss_mib"] = round(peak_rss_mib(), 1)
    return results
