"""command steps: real subprocesses, argv only, streamed, stopped on cancel/timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployments.runners.command import CommandRunner
from portal.cloud import process
from portal.cloud.errors import Cancelled, CloudError
from portal.cloud.process import MAX_LINE_BYTES, _LineSplitter

pytestmark = pytest.mark.slow

PY = sys.executable


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_it_runs_an_argv_and_streams_both_streams(make_ctx):
    script = "import sys; print('migrating'); print('warned', file=sys.stderr); print('done')"
    ctx = make_ctx({"argv": [PY, "-c", script]})

    outputs = CommandRunner().run(ctx)

    assert outputs == {"exit_code": 0}
    streams = [(stream, text) for _, stream, text in ctx.log.lines if stream != "system"]
    assert ("stdout", "migrating") in streams and ("stderr", "warned") in streams
    assert streams.index(("stdout", "migrating")) < streams.index(("stdout", "done"))


def test_it_fails_on_a_non_zero_exit_with_the_last_error_line(make_ctx):
    script = (
        "import sys; print('ERROR: relation fraud_scores missing', file=sys.stderr); sys.exit(3)"
    )
    ctx = make_ctx({"argv": [PY, "-c", script]})

    with pytest.raises(CloudError, match="exited with code 3: ERROR: relation fraud_scores"):
        CommandRunner().run(ctx)


def test_it_accepts_configured_exit_codes(make_ctx):
    ctx = make_ctx({"argv": [PY, "-c", "raise SystemExit(2)"], "ok_exit_codes": [0, 2]})

    assert CommandRunner().run(ctx) == {"exit_code": 2}


def test_it_never_hands_arguments_to_a_shell(make_ctx, tmp_path):
    marker = tmp_path / "pwned"
    argument = f"; touch {marker}"
    ctx = make_ctx({"argv": [PY, "-c", "import sys; print(sys.argv[1])", argument]})

    CommandRunner().run(ctx)

    assert not marker.exists()
    assert argument in ctx.log.text


def test_it_passes_env_and_cwd_without_logging_expanded_secrets(make_ctx):
    script = "import os; print(os.getcwd()); print(len(os.environ['DB_PASSWORD']))"
    ctx = make_ctx(
        {
            "argv": [PY, "-c", script, "${release.version}"],
            "env": {"DB_PASSWORD": "${secret.db}"},
            "cwd": "ops",
        },
        secret_values={"db": "hunter2-hunter2"},
    )
    (ctx.workdir / "ops").mkdir()

    CommandRunner().run(ctx)

    assert str(ctx.workdir / "ops") in ctx.log.text
    assert "15" in ctx.log.text
    assert "hunter2" not in ctx.log.text


def test_it_does_not_leak_the_workers_environment(make_ctx, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "portal-secret-key")
    script = "import os; print(os.environ.get('SECRET_KEY', 'absent'))"
    ctx = make_ctx({"argv": [PY, "-c", script]})

    CommandRunner().run(ctx)

    assert "absent" in ctx.log.text and "portal-secret-key" not in ctx.log.text


def test_it_stops_a_command_that_runs_past_its_timeout(make_ctx):
    ctx = make_ctx(
        {
            "argv": [PY, "-c", "import time; print('start', flush=True); time.sleep(30)"],
            "timeout_seconds": 1,
        }
    )
    started = time.monotonic()

    with pytest.raises(CloudError, match="did not finish within 1 s"):
        CommandRunner().run(ctx)

    # Stopped, not slept out (30 s); the margin is for a loaded machine.
    assert time.monotonic() - started < 20
    assert "start" in ctx.log.text


@pytest.mark.parametrize("own_session", [False, True], ids=["in its group", "own session"])
def test_cancel_stops_the_subprocess_and_what_it_started(make_ctx, tmp_path, own_session):
    """A child in its group goes with the signal to the group; a child in a
    session of its own (as Terraform runs a local-exec hook's command) is out
    of that signal's reach, held the step's output open until it ended, and
    is found by the marker in its environment instead."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        f"child = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'], "
        f"start_new_session={own_session}); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('working', flush=True); "
        "time.sleep(60)"
    )
    ctx = make_ctx({"argv": [PY, "-c", script]})
    record = ctx.log

    def log(text: str, stream: str = "stdout") -> None:
        record(text, stream)
        if text == "working":  # cancel once the child runs and its pid is written, not at a guess
            ctx.cancelled.set()

    ctx.log = log
    started = time.monotonic()

    with pytest.raises(Cancelled):
        CommandRunner().run(ctx)

    # Stopped, not waited out (60 s); the margin is for a loaded machine.
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    # On a loaded machine a signalled process may take a moment to go.
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child)
    assert ("Stopped what" in record.text) == own_session


# Processes start through setpriv where it exists (Debian: always), else
# through a preexec_fn; both must behave the same.
LAUNCHERS = ["setpriv", "preexec"]


@pytest.fixture(params=LAUNCHERS)
def launcher(request, monkeypatch) -> str:
    if request.param == "preexec":
        monkeypatch.setattr(process, "_setpriv", lambda: None)
    else:
        assert process._setpriv(), "setpriv (util-linux) is missing on this machine"
    return request.param


def test_it_reports_a_program_that_does_not_exist(make_ctx, launcher):
    with pytest.raises(CloudError, match="Could not start no-such-tool: No such file or directory"):
        CommandRunner().run(make_ctx({"argv": ["no-such-tool", "--help"]}))


def test_it_reports_a_path_it_cannot_run(make_ctx, launcher, tmp_path):
    script = tmp_path / "deploy.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    with pytest.raises(CloudError, match="Could not start .*deploy.sh: Permission denied"):
        CommandRunner().run(make_ctx({"argv": [str(script)]}))
    with pytest.raises(CloudError, match="Could not start ./gone.sh: No such file or directory"):
        process.stream_process(["./gone.sh"], log=print, cancelled=threading.Event(),
                               cwd=tmp_path)  # fmt: skip
    script.chmod(0o755)  # and a relative path runs from the process's directory
    lines = []
    returncode, _ = process.stream_process(
        ["./deploy.sh"], log=lambda text, stream: lines.append(text),
        cancelled=threading.Event(), cwd=tmp_path,
    )  # fmt: skip
    assert (returncode, lines) == (0, ["hi"])


WORKER = """
import sys, threading
sys.path.insert(0, {root!r})
from portal.cloud import process
if {launcher!r} == "preexec":
    process._setpriv = lambda: None
step = "import os, time; open({pidfile!r}, 'w').write(str(os.getpid())); time.sleep(60)"
process.stream_process(
    [sys.executable, "-c", step], log=lambda text, stream: None, cancelled=threading.Event()
)
"""


def test_a_step_process_dies_with_its_worker(launcher, tmp_path):
    """A worker killed with SIGKILL takes the step's process with it (Linux's
    parent-death signal), instead of leaving it to run after the environment
    lock is freed; through setpriv as through the preexec_fn."""
    pidfile = tmp_path / "step.pid"
    root = str(Path(__file__).resolve().parents[2])
    worker = subprocess.Popen(
        [PY, "-c", WORKER.format(root=root, launcher=launcher, pidfile=str(pidfile))]
    )
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        step = int(pidfile.read_text())
        assert alive(step)
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 10
    while alive(step) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(step)


def test_it_runs_the_rollback_argv_if_configured(make_ctx):
    runner = CommandRunner()
    config = {"argv": [PY, "-c", "print('up')"], "rollback_argv": [PY, "-c", "print('down')"]}

    runner.rollback(ctx := make_ctx(config))

    assert "down" in ctx.log.text
    assert runner.rollback(make_ctx({"argv": ["true"]})) == {"skipped": True}


def test_it_names_the_bad_key_in_the_config():
    runner = CommandRunner()
    with pytest.raises(ValueError, match="^argv"):
        runner.validate_config({"argv": "rm -rf /"})
    with pytest.raises(ValueError, match="^cwd"):
        runner.validate_config({"argv": ["ls"], "cwd": "../etc"})
    with pytest.raises(ValueError, match="^ok_exit_codes"):
        runner.validate_config({"argv": ["ls"], "ok_exit_codes": ["0"]})


def test_a_line_without_end_goes_out_in_bounded_pieces_whole_characters_kept(make_ctx):
    """A progress bar redrawn with \\r and never ended by \\n: 200 KiB of
    multi-byte text arrives as pieces of at most MAX_LINE_BYTES, none cut
    inside a character, and put together they are exactly what was printed."""
    script = (
        "import sys\n"
        "for i in range(1000):\n"
        "    sys.stdout.write('é' * 100 + '\\r'); sys.stdout.flush()\n"
        "sys.stdout.write('\\r\\nCRLF line\\r\\nlast')\n"
    )
    ctx = make_ctx({"argv": [PY, "-c", script]})

    CommandRunner().run(ctx)

    texts = [text for _, stream, text in ctx.log.lines if stream == "stdout"]
    assert texts[-2:] == ["CRLF line", "last"]
    pieces = texts[:-2]
    assert len(pieces) > 1
    assert all(len(piece.encode()) <= MAX_LINE_BYTES for piece in pieces)
    assert "\ufffd" not in "".join(pieces)  # no character split between two pieces
    assert "".join(pieces) == ("é" * 100 + "\r") * 1000


def test_a_long_line_that_ends_within_one_read_is_cut_too():
    """The read that brings a long line's end also holds its start (the
    unterminated rest of the read before, up to MAX_LINE_BYTES, plus a whole
    64 KiB read): that line is cut like an unterminated one."""
    splitter = _LineSplitter()
    first = splitter.feed("ü".encode() * 10_000)  # 20,000 bytes, no newline yet
    lines = splitter.feed(b"x" * 50_000 + b"\nshort\r\n")

    assert first == []
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    assert "".join(lines[:-1]) == "ü" * 10_000 + "x" * 50_000
    assert lines[-1] == "short"
    assert splitter.rest() == []
