"""Shared set-up for the benchmarks: a database of their own, Django, timing.

The benchmarks always run against `gantry_bench` (BENCH_DATABASE_URL, or the
server of DATABASE_URL with the database name replaced), which they drop and
recreate: `make bench` passes the test suite's DATABASE_URL, and a benchmark
must never write a million rows into someone's test or demo database.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB_NAME = "gantry_bench"
RESULTS_DIR = ROOT / "bench" / "results"
# The WebSocket clients stand for browsers, and a browser's handshake offers
# permessage-deflate (Chromium's always does): aiohttp's `compress` makes the
# same offer, and the server decides. BENCH_WS_COMPRESS=0 offers nothing.
WS_COMPRESS = int(os.environ.get("BENCH_WS_COMPRESS", "15"))


def bench_database_url() -> str:
    explicit = os.environ.get("BENCH_DATABASE_URL")
    if explicit:
        return explicit
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        base = "postgres://postgres@127.0.0.1:5432/gantry"
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{BENCH_DB_NAME}"))


def configure_environment() -> str:
    """Point Django at the bench database; returns its URL. Call before django.setup()."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    url = bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production")
    os.environ.setdefault("AUDIT_KEY", "bench-audit-key-not-for-production")
    os.environ["HTTPS"] = "0"
    os.environ["DEBUG"] = "0"
    # make bench runs with the test suite's environment, which checks every
    # prepared query against Django's own compilation: work no server does.
    os.environ["PREPARED_QUERIES_CHECK"] = "0"
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    if "testserver" not in os.environ["ALLOWED_HOSTS"]:
        os.environ["ALLOWED_HOSTS"] += ",testserver"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    return url


def recreate_database(url: str, allowed: str = BENCH_DB_NAME) -> None:
    """Drop and create a benchmark's database (only ever the one it names)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if name != allowed:
        raise SystemExit(f"refusing to recreate {name!r}: this benchmark only uses {allowed}")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def settle(url: str, limit_s: float = 180) -> dict:
    """Let PostgreSQL finish the work an earlier stage left it (autovacuum
    of a million fresh rows, a checkpoint's writes) before a latency
    benchmark starts, so it measures its own path and not that clean-up on
    the same two cores. Returns what it did and how long it waited."""
    import time

    import psycopg

    started = time.perf_counter()
    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        while time.perf_counter() - started < limit_s:
            (vacuums,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()
            if not vacuums:
                break
            time.sleep(1)
    return {"checkpoint": True, "autovacuum_running_after": vacuums,
            "waited_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def setup_django(fresh: bool) -> None:
    url = configure_environment()
    if fresh:
        recreate_database(url)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # The pages render {% static %}; the manifest needs collectstatic, the
    # benchmark only needs the URLs.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # No setup_test_environment(): it makes every template render send a
    # signal and the test Client copy each template's context, work a
    # production request never does (bench_dashboard renders the same way).
    # Nothing here reads response.context; mail stays in memory.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip()
    except OSError:
        free = ""
    postgres = ""
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0]
    except Exception:  # noqa: BLE001 - machine info is best-effort
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "free_g": free,
        "python": platform.python_version(),
        "postgres": postgres,
    }
