"""Pages through the web server as deployed: uvicorn (ASGI) serving the
portal, requests over HTTP with a session cookie, one at a time, at full
data. bench_pages times the views in-process (its split of CPU and
PostgreSQL needs that); this is what a browser waits for, server and
connection handling included: under ASGI each request runs in a thread of
its own and takes its database connection from the process's pool.

Also counts the server's PostgreSQL connections after the run (it names
itself to the server): at most DB_POOL_MAX_SIZE however many requests; and
exports the whole audit trail through it, for the server's peak memory.
Goals as bench_pages: p95 <= 50 ms, the deployment page p95 <= 30 ms.
"""

from __future__ import annotations

import os
import time
import urllib.request

from bench.common import median, percentile

APPLICATION_NAME = "gantry-bench-web"
PAGES = ("floor: navigation badge", "dashboard", "environment", "deployment detail (awaiting)",
         "deployment detail (succeeded)", "audit")  # fmt: skip
REQUESTS = 60
# Requests before the timed ones: enough for every connection of the pool
# to have prepared the page's queries (DB_PREPARE_THRESHOLD runs on each;
# the pool hands its idle connections out in turn), as on a server that has
# been up for a while. With 5, the first timed requests planned theirs.
WARM_UP = 20
GOAL_P95_MS = {"deployment detail (awaiting)": 30.0, "deployment detail (succeeded)": 30.0}
DEFAULT_GOAL_P95_MS = 50.0


def _urls() -> dict[str, str]:
    from bench.bench_pages import _pages, page_url
    from environments.models import Environment

    env_id = Environment.objects.get(application__slug="app-00", slug="production").pk
    return {
        label: page_url(name, kwargs, env_id) for label, name, kwargs in _pages() if label in PAGES
    }


def _server_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]
        )
        return cursor.fetchone()[0]


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    return round(kib / 1024, 1)


def _export(port: int, cookie: str, pid: int) -> dict:
    """The whole audit trail as CSV through the server, as root: the time to
    its first byte, lines per second, and the server's peak memory before and
    after (a stream the server read whole before sending would show there)."""
    from django.urls import reverse

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{reverse('audit-export-csv')}",
        headers={"Cookie": f"sessionid={cookie}"},
    )
    peak_before = _peak_rss_mib(pid)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        lines = response.read(1).count(b"\n")
        first_byte = time.perf_counter() - started
        while chunk := response.read(1 << 20):
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    return {
        "lines": lines, "first_byte_s": round(first_byte, 2), "seconds": round(seconds, 1),
        "lines_per_s": round(lines / seconds), "peak_rss_mib_before": peak_before,
        "peak_rss_mib_after": _peak_rss_mib(pid),
    }  # fmt: skip


def run(requests: int = REQUESTS) -> dict:
    """Needs Django set up on the bench database (common.setup_django)."""
    from django.conf import settings
    from django.contrib.auth.models import User

    from bench.bench_logs import session_cookie, start_server, stop

    urls = _urls()
    cookies = {user: session_cookie(User.objects.get(username=user)) for user in ("root", "viewer")}
    server, port = start_server(
        DATABASE_URL=f"{os.environ['DATABASE_URL']}?application_name={APPLICATION_NAME}",
        DJANGO_SETTINGS_MODULE="bench.server_settings",
    )
    result: dict = {"requests": requests}
    try:
        for user, cookie in cookies.items():
            per_user = result.setdefault(user, {})
            for label, path in urls.items():
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}", headers={"Cookie": f"sessionid={cookie}"}
                )
                times = []
                for index in range(WARM_UP + requests):
                    started = time.perf_counter()
                    with urllib.request.urlopen(request, timeout=30) as response:
                        response.read()
                        status = response.status
                    if index >= WARM_UP:
                        times.append((time.perf_counter() - started) * 1000)
                goal = GOAL_P95_MS.get(label, DEFAULT_GOAL_P95_MS)
                per_user[label] = {
                    "status": status, "url": path,
                    "p50_ms": round(median(times), 1), "p95_ms": round(percentile(times, 95), 1),
                    "goal_p95_ms": goal, "met": percentile(times, 95) <= goal,
                }  # fmt: skip
        result["server_connections"] = _server_connections()
        result["export"] = _export(port, cookies["root"], server.pid)
        result["pool_max"] = (
            settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size")
        )
    finally:
        stop(server)
    return result
