"""The real processes the fault tests start, break and start again, each on
its own free port and stopped by the test that started it (never anything
else): redis-server, a PostgreSQL cluster (initdb/pg_ctl in a temporary
directory), moto's server, and Gantry's own web, worker and housekeeping
processes.

Waits are on real conditions (a ping, a row, a socket), never guessed
sleeps; `wait_for` returns what it waited for, or None on its timeout, so a
test can say what did not happen. `record` keeps the figures a test measured
(docs/RELIABILITY.md): printed, and appended as JSON lines to $FAULTS_REPORT
when that is set.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from glob import glob
from pathlib import Path

import redis
from django.conf import settings

from portal.cloud.process import RUN_MARKER, processes_with
from tests.polling import wait_for
from tests.servers import uvicorn_argv

ROOT = Path(settings.BASE_DIR)
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
START_SECONDS = 60  # a process up, on a loaded two-core machine


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; reused at once by the caller)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def record(fault: str, **figures) -> None:
    """Keep what a fault test measured: printed (pytest -s shows it) and, with
    $FAULTS_REPORT set, appended to that file as one JSON line."""
    line = json.dumps({"fault": fault, **figures}, sort_keys=True, default=str)
    print(f"\nFAULT FIGURES {line}")
    report = os.environ.get("FAULTS_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(line + "\n")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process this module started (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class RedisServer:
    """redis-server on its own port, without persistence: stopped and started
    again it comes back empty, as a Redis restarted without its data does."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.log = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> RedisServer:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_for(self.answers, START_SECONDS, every=0.02):
            raise RuntimeError(f"redis-server did not start on {self.port}: {self.log.read_text()}")
        return self

    def stop(self) -> None:
        """Stopped (SIGTERM, no save); returns once the port is closed."""
        if self.process is not None:
            _stop(self.process)
            self.process = None


class PostgresCluster:
    """A PostgreSQL cluster of its own: initdb in a temporary directory, run
    by pg_ctl on a free port. Run as the `postgres` user when the tests run as
    root (PostgreSQL refuses root)."""

    def __init__(self, port: int | None = None) -> None:
        found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="gantry-faults-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]], check=True, capture_output=True,
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None, cwd=self.base,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/gantry"

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "gantry")
        return self

    def start(self) -> None:
        # fsync off: the test stops the server cleanly (a checkpoint), never the machine.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
                   "-c fsync=off -c max_connections=100")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", str(START_SECONDS), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are disconnected, open transactions rolled back,
        and the server checkpoints: what was committed stays committed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


class MotoServer:
    """moto's server as a process of its own (the sandbox runs it in a thread,
    which could not be stopped and started as a whole)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = workdir / f"moto-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> MotoServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        if not wait_for(self.answers, START_SECONDS, every=0.1):
            raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


class Portal:
    """Gantry's processes for one test: `manage.py <command>` (rqworker,
    housekeeping) and the web server (uvicorn), all with one environment,
    each in its own process group and stopped at the end."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.web_port: int | None = None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.processes.append((name, process))
        return process

    def manage(self, *args: str) -> subprocess.Popen:
        return self._spawn(args[0], [PYTHON, "manage.py", *args])

    def worker(self, *queues: str) -> subprocess.Popen:
        return self.manage("rqworker", *(queues or ("high", "default", "low")))

    def housekeeping(self) -> subprocess.Popen:
        return self.manage("housekeeping", "deployments.cron")

    def web(self) -> subprocess.Popen:
        """uvicorn as in production (HTTP and WebSockets); returns once it answers."""
        self.web_port = free_port()
        process = self._spawn("web", uvicorn_argv(self.web_port))
        if not wait_for(lambda: self.get("/health/live")[0] == 200, START_SECONDS, every=0.2):
            raise RuntimeError(f"the web server did not start:\n{self.logs()}")
        return process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, headers=headers)

    def request(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one HTTP request to the web process; (0, b"") if it does not answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def alive(self, process: subprocess.Popen) -> bool:
        return process.poll() is None

    def logs(self) -> str:
        """The processes' output, for assertion messages."""
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            _stop(process)
        self.processes.clear()
        stop_leftover_steps(self.workdir)


def stop_leftover_steps(workdir: Path) -> None:
    """SIGKILL what the steps of this test's workers left running. A worker
    stopped mid-step takes the step's process with it (a death signal), not
    what that process started: Terraform's provider plugins ran on for the
    rest of the suite. Found by the engine's marker in their environment
    (portal/cloud/process.py) and this test's directory in it."""
    for pid in processes_with(f"{RUN_MARKER}=", str(workdir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def portal_env(*, database_url: str, redis_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of Gantry's processes in a fault test: this test's
    database and Redis, a deploy workdir of its own, and `extra` (the AWS
    endpoint, the Kubernetes API, Terraform's settings, ...)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DEPLOY_WORKDIR": str(workdir / "deployments"),
        "PYTHONUNBUFFERED": "1",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra,
    }
