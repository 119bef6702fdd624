"""Running tools (Terraform, git, a step's command) as processes whose output
is streamed line by line as it is printed, and bounding waits in time.

Commands are argv lists, never shell strings: a value from a release or an
environment can't turn into shell syntax.
"""

from __future__ import annotations

import ctypes
import functools
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from portal.cloud.errors import Cancelled, CloudError


class Deadline:
    """A point in time a wait must not pass."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining <= 0


# The worker's own environment holds the portal's secrets (database URL,
# SECRET_KEY); a step only inherits what tools need to find things.
INHERITED_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER",
    "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "KUBECONFIG", "KUBE_API_URL",
)  # fmt: skip

GRACE_SECONDS = 10.0

# Set in the environment of every process a step starts, with a value of its
# own: what the process starts inherits it (Terraform's providers and the
# commands of its local-exec hooks do), which finds them when the step is
# stopped even after they left its process group (see _stop_leftovers).
RUN_MARKER = "GANTRY_STEP_RUN"


def base_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(extra or {})
    return env


READ_SIZE = 1 << 16
MAX_LINE_BYTES = 32 * 1024
STDERR_KEPT = 2000


class _LineSplitter:
    """Turns one pipe's chunks into complete lines (the last, unfinished line
    waits for the next chunk)."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self.partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.partial, lines = data, []
        else:
            complete, self.partial = data[:end], data[end + 1 :]
            lines = _decode(complete).split("\n")
            # No line goes out longer than MAX_LINE_BYTES (a frame stays small);
            # checked per line only when the chunk could hold such a line at all.
            if len(complete) > MAX_LINE_BYTES and max(map(len, lines)) > MAX_LINE_BYTES // 4:
                lines = [piece for line in lines for piece in _bounded(line)]
        # A line with no end in sight (a progress bar redrawn with \r, a dump
        # without newlines) goes out in MAX_LINE_BYTES pieces: memory stays
        # bounded, and a read costs its own size rather than everything
        # unterminated so far.
        while len(self.partial) > MAX_LINE_BYTES:
            at = _utf8_boundary(self.partial, MAX_LINE_BYTES)
            lines.append(_decode(self.partial[:at]))
            self.partial = self.partial[at:]
        return lines

    def rest(self) -> list[str]:
        return [_decode(self.partial)] if self.partial else []


def _decode(raw: bytes) -> str:
    """Lines' bytes as text, decoded in one call for a whole chunk; CRLF
    endings become plain ones."""
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n").removesuffix("\r")


def _bounded(line: str) -> list[str]:
    """`line` in pieces of at most MAX_LINE_BYTES of UTF-8, whole characters each."""
    if len(line) <= MAX_LINE_BYTES // 4:  # four bytes a character at the most
        return [line]
    data, pieces = line.encode(), []
    while len(data) > MAX_LINE_BYTES:
        at = _utf8_boundary(data, MAX_LINE_BYTES)
        pieces.append(data[:at].decode())
        data = data[at:]
    return [*pieces, data.decode()]


def _utf8_boundary(data: bytes, at: int) -> int:
    """`at`, moved back to the start of the UTF-8 character it falls in."""
    while at > 0 and data[at] & 0xC0 == 0x80:
        at -= 1
    return at or len(data)


def _log_lines(log: Callable[..., None], lines: list[str], stream: str) -> None:
    """Hand lines to the log: in one call when it takes batches (the engine's
    LogWriter), else one call per line."""
    write_lines = getattr(log, "write_lines", None)
    if write_lines is not None:
        write_lines(lines, stream)
        return
    for line in lines:
        log(line, stream)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv (Debian: essential), or None where it is missing."""
    return shutil.which("setpriv")


def _launch(
    argv: list[str], env: dict[str, str], cwd: Path | None
) -> tuple[list[str], Callable | None]:
    """(argv to start, preexec_fn) for a process that dies with the worker.

    The death signal is set by `setpriv --pdeathsig KILL`, which then execs
    the tool (same pid; the signal survives exec): a preexec_fn makes Python
    fork the whole worker (~130 MB) and run Python in the child, 5.6 ms a
    process against 1.5 ms through setpriv (each Terraform command, each
    command step). Without setpriv, the preexec_fn does it. setpriv reports
    a missing tool only as an exit code, so that is checked here, as Popen
    would report it.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return argv, _die_with_parent
    program = argv[0]
    if os.sep in program:  # a path, relative to where the process starts
        path = Path(cwd or ".") / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            reason = "Permission denied" if path.exists() else "No such file or directory"
            raise CloudError(f"Could not start {program}: {reason}.")
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise CloudError(f"Could not start {program}: No such file or directory.")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv], None


def _stop(process: subprocess.Popen, first_signal: int, grace: float) -> None:
    """Ask the whole process group to stop, then kill it if it won't."""
    try:
        os.killpg(process.pid, first_signal)
        process.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait()


def processes_with(*entries: str) -> list[int]:
    """The pids of the running processes (this user's: others' environments
    are not readable) whose environment holds every one of `entries`."""
    wanted = [entry.encode() for entry in entries]
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/environ", "rb") as file:
                environ = file.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile, or not ours to read
        if all(entry in environ for entry in wanted):
            found.append(int(name))
    return found


def _stop_leftovers(marker: str, program: str, log: Callable[..., None]) -> None:
    """SIGKILL every process still running with the step's `marker` in its
    environment: what a stopped step's process started and left behind.
    Terraform runs a local-exec hook's command in a session of its own, out
    of reach of the signal to the step's process group, and kills only the
    shell when it stops: a cancelled rollout's `sleep` (or a real rollout
    script) ran on after the deployment said "cancelled"."""
    stopped = 0
    for pid in processes_with(f"{RUN_MARKER}={marker}"):
        try:
            os.kill(pid, signal.SIGKILL)
            stopped += 1
        except ProcessLookupError:
            continue
    if stopped:
        log(f"Stopped what {program} had started and left running.", "system")


def stream_process(
    argv: list[str],
    *,
    log: Callable[..., None],
    cancelled: threading.Event,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    stop_signal: int = signal.SIGTERM,
    grace: float = GRACE_SECONDS,
) -> tuple[int, list[str]]:
    """Run argv, handing every stdout/stderr line to `log(text, stream)` as it
    is printed.

    Returns the exit code and the stderr lines (for error messages). On
    `cancelled` or timeout the process group gets `stop_signal`, then SIGKILL
    after `grace` seconds (raising Cancelled or CloudError). `log` is only
    ever called from this thread.
    """
    marker = secrets.token_hex(8)
    env = {**(env if env is not None else base_environment()), RUN_MARKER: marker}
    launch, preexec_fn = _launch(argv, env, cwd)
    try:
        process = subprocess.Popen(
            launch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so we can stop children too
            # If the worker dies (kill -9), the step's process dies with it instead
            # of running on after the environment lock was freed (see _launch).
            preexec_fn=preexec_fn,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise CloudError(f"Could not start {argv[0]}: {exc.strerror or exc}.") from None
    # One thread reads both pipes in chunks: a line costs a slice of a
    # bytes.split, not a thread hand-off (this is the per-line hot path).
    selector = selectors.DefaultSelector()
    streams = {process.stdout.fileno(): "stdout", process.stderr.fileno(): "stderr"}
    splitters = {fd: _LineSplitter() for fd in streams}
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    deadline = Deadline(timeout) if timeout else None
    # The last lines of stderr, for error messages (a chatty tool must not fill memory).
    stderr_lines: deque[str] = deque(maxlen=STDERR_KEPT)
    stopped_because: str | None = None
    swept = False
    try:
        while selector.get_map():
            if stopped_because and not swept and process.poll() is not None:
                # The step's process is gone. What it started and left running
                # may still hold its pipes open: it goes too.
                swept = True
                _stop_leftovers(marker, argv[0], log)
            if stopped_because is None:
                if cancelled.is_set():
                    stopped_because = "cancelled"
                elif deadline is not None and deadline.passed:
                    stopped_because = "timeout"
                if stopped_because:
                    log(f"Stopping {argv[0]} ({stopped_because}).", "system")
                    # Stop in the background so we keep draining its output meanwhile.
                    threading.Thread(
                        target=_stop, args=(process, stop_signal, grace), daemon=True
                    ).start()
            for key, _ in selector.select(timeout=0.1):
                fd = key.fd
                chunk = os.read(fd, READ_SIZE)
                if chunk:
                    lines = splitters[fd].feed(chunk)
                else:  # end of this stream
                    selector.unregister(fd)
                    lines = splitters[fd].rest()
                if not lines:
                    continue
                if streams[fd] == "stderr":
                    stderr_lines.extend(lines)
                _log_lines(log, lines, streams[fd])
    finally:
        selector.close()
        process.stdout.close()
        process.stderr.close()
    returncode = process.wait()
    if stopped_because and not swept:  # its output ended before it did
        _stop_leftovers(marker, argv[0], log)
    if stopped_because == "cancelled":
        raise Cancelled(f"Cancelled; {argv[0]} was stopped (exit code {returncode}).")
    if stopped_because == "timeout":
        raise CloudError(f"{argv[0]} did not finish within {timeout:g} s and was stopped.")
    return returncode, list(stderr_lines)
