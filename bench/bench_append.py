"""Audit append rate through portal.core.audit.record(), one transaction per event
as the application does (each append takes the chain's advisory lock)."""

from __future__ import annotations

import time


def run(count: int = 2_000, repeats: int = 3) -> dict:
    from django.contrib.auth.models import User

    from environments.models import Environment
    from portal.core import audit

    actor = User.objects.get(username="root")
    environment = Environment.objects.select_related("application").first()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for n in range(count):
            audit.record("bench.appended", ("bench.item", n, f"item {n}"), environment=environment,
                         actor=actor, after={"n": n})  # fmt: skip
        rates.append(count / (time.perf_counter() - started))
    rates.sort()
    return {
        "events_per_run": count,
        "runs": repeats,
        "events_per_s_median": round(rates[len(rates) // 2]),
        "events_per_s_all": [round(r) for r in rates],
    }
