"""Server time (p50/p95) and SQL query count of the main pages, as a superuser
and as a member who sees two applications. Run at two data sizes: the query
count must not grow with the data (goal p95 <= 50 ms).

The pages are timed in rounds, one request of each per round, with the
floor among them: the cheapest signed-in request, against which a page's
p95 under load says how much of it is the page and how much the machine.
Each request's wall time is split into the serving thread's CPU time, the
time it waited for PostgreSQL and the rest, waiting for a CPU (see _timed).
Pages that do not exist yet (URL name missing or a 404) are skipped with a note.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from bench.common import median, percentile

GOAL_P95_MS = 50.0
FLOOR = "floor: navigation badge"
# Not a page: pure Python calibrated to YARDSTICK_CPU_MS of CPU, no I/O,
# timed in the same rounds. Its p95 is what the machine's share of a CPU
# alone makes of that much work: a page needing as much CPU cannot be
# faster, whatever its queries do. 15 ms is about the deployment page's own.
# Timed between pages it costs a little more than calibrated (their code
# has taken its caches); the report gives the CPU it measured.
YARDSTICK_CPU_MS = 15.0
YARDSTICK = f"yardstick: pure Python, ~{YARDSTICK_CPU_MS:g} ms of CPU, no I/O"


def _pages() -> list[tuple[str, str, dict]]:
    """(label, URL name, kwargs or query) for each page measured."""
    from deployments.choices import Status
    from deployments.models import Deployment, Release
    from portal.core.models import AuditEvent

    app = "app-00"
    open_deployment = (
        Deployment.objects.filter(
            environment__application__slug=app, status=Status.AWAITING_APPROVAL
        )  # fmt: skip
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    finished = (
        Deployment.objects.filter(environment__application__slug=app, status=Status.SUCCEEDED)
        .order_by("-pk").values_list("pk", flat=True).first()
    )  # fmt: skip
    release = Release.objects.filter(application__slug=app).order_by("-pk").first()
    middle = (AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 2) // 2
    return [
        # The floor: the cheapest signed-in request (the navigation bar's
        # badge: session, user, the inbox count, a one-line template). Every
        # page pays at least this; under load its p95 says how much of a
        # page's is the machine's.
        (FLOOR, "approvals-count", {}),
        ("dashboard", "home", {}),
        ("catalog", "catalog", {}),
        ("application", "application-detail", {"slug": app}),
        ("environment", "environment-detail", {"slug": app, "env_slug": "production"}),
        ("release list", "release-list", {"slug": app}),
        ("release detail", "release-detail", {"pk": release.pk if release else 0}),
        ("deployment list", "deployment-list", {}),
        ("deployment list, filtered", "deployment-list", {"?": {"status": "succeeded"}}),
        ("deployment detail (awaiting)", "deployment-detail", {"pk": open_deployment or 0}),
        ("deployment detail (succeeded)", "deployment-detail", {"pk": finished or 0}),
        ("audit", "audit", {}),
        ("audit, page in the middle", "audit", {"?": {"before": middle}}),
        ("audit, one environment", "audit", {"?": {"environment": "__env__"}}),
        ("audit, by action", "audit", {"?": {"action": "deployment.approved"}}),
    ]


def page_url(name: str, kwargs: dict, env_id: int) -> str:
    """The URL of one of _pages(): its query under "?", "__env__" standing for env_id."""
    from django.urls import reverse
    from django.utils.http import urlencode

    kwargs = dict(kwargs)
    query = kwargs.pop("?", None)
    url = reverse(name, kwargs=kwargs)
    if query:
        url += "?" + urlencode({k: (env_id if v == "__env__" else v) for k, v in query.items()})
    return url


def _first(client, url: str) -> dict:
    """Status and query count of the page's first request, then two warm-ups."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    # Each request starts by emptying the query log (request_started), so the
    # context must start from an empty log too or it counts nothing.
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    # Read now: the captured list is a view of the live log, which the next request empties.
    outcome = {"status": response.status_code, "queries": len(queries)}
    if response.status_code == 200:
        for _ in range(2):  # warm-up
            client.get(url)
    return outcome


def _calibrated_work(cpu_ms: float):
    """A function that spends about `cpu_ms` of this thread's CPU time.
    Calibrated on CPU time, not wall time, so neighbours do not skew it."""

    def spin(rounds: int) -> int:
        total = 0
        for i in range(rounds):
            total += i * i % 7
        return total

    chunk = 20_000
    costs = []
    for _ in range(15):
        started = time.thread_time()
        spin(chunk)
        costs.append(time.thread_time() - started)
    rounds = max(1, round(cpu_ms / 1000 / (min(costs) / chunk)))  # the least disturbed
    # Once more at full length, which costs a little more per round than a chunk.
    costs = []
    for _ in range(5):
        started = time.thread_time()
        spin(rounds)
        costs.append(time.thread_time() - started)
    rounds = max(1, round(rounds * cpu_ms / 1000 / min(costs)))
    work = partial(spin, rounds)
    # The machine's speed, comparable across machines (the yardstick's CPU time
    # is not: it is calibrated): the same pages cost more CPU on a slower one.
    work.rounds_per_ms = round(rounds / cpu_ms)
    return work


def _timed(work: dict[str, Callable[[], object]], requests: int) -> dict[str, dict[str, list]]:
    """`requests` timed calls of each page's request (or the yardstick), in
    rounds: one of each per round, so every page meets the same moments of a
    noisy machine (a page timed in one stretch of its own gets whatever the
    neighbours did then).

    Each request's wall time (ms), what the user waits, is split in three:
    `cpu`, the serving thread's own CPU time (the test client serves in this
    thread); `db`, the time it sat blocked on PostgreSQL (its queries' wall
    time less the CPU the thread spent inside them, sending and decoding);
    and the rest, the time it waited for a CPU the neighbours held."""
    from django.db import connection

    times = {label: {"wall": [], "cpu": [], "db": []} for label in work}
    blocked = [0.0]

    def time_query(execute, sql, params, many, context):
        cpu_started, started = time.thread_time(), time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            blocked[0] += (time.perf_counter() - started) - (time.thread_time() - cpu_started)

    with connection.execute_wrapper(time_query):
        for _ in range(requests):
            for label, call in work.items():
                blocked[0] = 0.0
                cpu_started, started = time.thread_time(), time.perf_counter()
                call()
                wall, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
                times[label]["wall"].append(wall * 1000)
                times[label]["cpu"].append(cpu * 1000)
                times[label]["db"].append(blocked[0] * 1000)
    return times


# 100 timed requests per page: the p95 is then the 95th of 100, not the 38th of
# 40, and one stall of a noisy VM moves it less.
def run(requests: int = 100) -> dict:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import NoReverseMatch

    from environments.models import Environment
    from portal.core import collector

    collector.tune()  # as the server's entry point does (portal/asgi.py)
    env_id = Environment.objects.get(application__slug="app-00", slug="production").pk
    results: dict = {}
    for username in ("root", "viewer"):
        client = Client()
        client.force_login(User.objects.get(username=username))
        per_user = results.setdefault(username, {})
        urls = {}
        for label, name, kwargs in _pages():
            try:
                url = page_url(name, kwargs, env_id)
            except NoReverseMatch:
                per_user[label] = {"skipped": f"no URL named {name!r} yet"}
                continue
            try:
                outcome = _first(client, url)
            except Exception as exc:  # noqa: BLE001 - a page under construction must not stop the run
                outcome = {"skipped": f"{type(exc).__name__}: {exc}"[:200]}
            if outcome.get("status") == 404:
                outcome = {"skipped": f"{url} answers 404 (not written yet?)"}
            elif "status" in outcome and outcome["status"] != 200:
                outcome["skipped"] = f"{url} answers {outcome['status']}"
            outcome["url"] = url
            per_user[label] = outcome
            if "skipped" not in outcome:
                urls[label] = url
        work = {label: partial(client.get, url) for label, url in urls.items()}
        work[YARDSTICK] = _calibrated_work(YARDSTICK_CPU_MS)
        per_user[YARDSTICK] = {"queries": 0, "rounds_per_ms": work[YARDSTICK].rounds_per_ms}
        for label, times in _timed(work, requests).items():
            wall = times["wall"]
            per_user[label].update(
                p50_ms=round(median(wall), 1),
                p95_ms=round(percentile(wall, 95), 1),
                meets_goal=percentile(wall, 95) <= GOAL_P95_MS if label != YARDSTICK else None,
                cpu_p50_ms=round(median(times["cpu"]), 1),
                cpu_p95_ms=round(percentile(times["cpu"], 95), 1),
                db_p50_ms=round(median(times["db"]), 1),
                db_p95_ms=round(percentile(times["db"], 95), 1),
            )
    return results
