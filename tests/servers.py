"""The portal's own processes for tests that need them real: uvicorn web
servers and RQ workers, started against this test's database (committed
data: transaction=True) and Redis, and stopped at the end of the test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable


def image_command() -> list[str]:
    """The web command of the image (the Dockerfile's CMD)."""
    text = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*?\])$", text.replace("\\\n", ""), re.M | re.S)
    assert cmd, "the Dockerfile has no CMD in exec form"
    return json.loads(cmd.group(1))


def uvicorn_argv(port: int) -> list[str]:
    """The image's web command on 127.0.0.1:`port`, with this venv's Python:
    the test servers run what production runs, options included."""
    command = image_command()
    assert command[0] == "uvicorn"
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return [PYTHON, "-m", *command]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    """This test's database (pytest-django's test_* copy), as a URL for a subprocess."""
    db = connection.settings_dict
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{host}/{db['NAME']}"


def process_environ(**extra: str) -> dict[str, str]:
    """What the portal's processes run with: production's settings (DEBUG off)
    but static files from the finders (tests/server_settings.py)."""
    environ = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "HTTPS": "0",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return environ


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    # Importing Django and the portal takes seconds on a loaded machine.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health/live", timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the web server at {url} did not start in {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after 10 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def started(args: list[str], log: Path, environ: dict[str, str]) -> Iterator[subprocess.Popen]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            args, cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            stop(process)


@contextmanager
def web_server(log: Path, **extra: str) -> Iterator[str]:
    """uvicorn serving the portal on a free port, as the Dockerfile runs it; yields its URL."""
    port = free_port()
    with started(uvicorn_argv(port), log, process_environ(**extra)) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        yield url


@contextmanager
def worker(log: Path, *queues: str, **extra: str) -> Iterator[subprocess.Popen]:
    """`manage.py rqworker` as make run and the compose file start it."""
    args = [PYTHON, "manage.py", "rqworker", *(queues or ("high", "default", "low"))]
    with started(args, log, process_environ(**extra)) as process:
        yield process
