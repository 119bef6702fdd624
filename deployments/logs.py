"""The per-line path of a running deployment: mask, number, store, broadcast.

This is the hot path (Terraform can print thousands of lines a second), so a
line costs one masking pass and an append under a lock; a flusher thread
writes batches with one INSERT and sends each batch to the deployment's
channel group as one message. Lines are stored before they are sent, so a
viewer that misses a message can always fill the gap from the database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connection, transaction
from django.db.models import Max
from django.utils import timezone

from deployments.choices import Stream
from deployments.runners.masking import Masker
from environments.live import LAYER, publish

MIN_FLUSH_GAP = 0.025
MAX_BATCH = 500
# Text per batch (one WebSocket frame): well under the 1 MiB message limits
# common in WebSocket servers and proxies, counting JSON escapes and each
# line's seq/step/stream/at.
MAX_FRAME_BYTES = 256 * 1024
LINE_OVERHEAD = 120


# The channel layer of live logs (see settings.CHANNEL_LAYERS).
LOG_CHANNEL_LAYER = LAYER  # the one publish() sends to


def group_name(deployment_id: int) -> str:
    return f"deployment-{deployment_id}"


def line_payload(seq: int, step: str, stream: str, text: str, at) -> dict:
    """A line as viewers get it; `at` a datetime, or its isoformat() already made."""
    at = at if isinstance(at, str) else at.isoformat()
    return {"seq": seq, "step": step, "stream": stream, "text": text, "at": at}


def lines_event(lines: list[dict]) -> dict:
    """The group message for a batch: the viewers' frame encoded once here, not
    once per viewer in the server (with 20 viewers, encoding was most of its
    CPU); `first`/`last` let a consumer check continuity without decoding it."""
    return {
        "type": "log.lines",
        "first": lines[0]["seq"],
        "last": lines[-1]["seq"],
        "frame": json.dumps({"type": "lines", "lines": lines}),
    }


def store_lines(deployment_id: int, batch: list[tuple], stamps: dict) -> None:
    """INSERT one batch of (seq, step_id, step_name, stream, text, at); `stamps`
    maps each `at` to its isoformat() (the lines of a chunk share one).

    On PostgreSQL through COPY, which takes a batch of lines about ten times
    faster than a multi-row INSERT built by the ORM; elsewhere (SQLite in
    the demo) through bulk_create.
    """
    from deployments.models import LogLine

    if connection.vendor != "postgresql":
        LogLine.objects.bulk_create(
            LogLine(deployment_id=deployment_id, seq=seq, step_id=step_id,
                    stream=stream, text=text, at=at)
            for seq, step_id, _, stream, text, at in batch
        )  # fmt: skip
        return
    table = LogLine._meta.db_table
    columns = "deployment_id, seq, step_id, stream, text, at"
    # The whole batch as COPY's text format in one write (a write_row per
    # line costs more than the server's work).
    data = "".join(
        f"{deployment_id}\t{seq}\t{NULL if step_id is None else step_id}\t{stream}\t"
        f"{copy_text(text)}\t{stamps[at]}\n"
        for seq, step_id, _, stream, text, at in batch
    )
    with transaction.atomic(), connection.cursor() as cursor:
        # Log lines don't wait for the WAL flush: a commit stuck behind a
        # checkpoint's I/O held every viewer's next lines for hundreds of ms.
        # A crash of the database server may lose the last fraction of a second
        # of lines it had acknowledged; state changes and audit events commit
        # in their own transactions, durably as always.
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(data)


NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": ""})


def copy_text(text: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage
    return escaped; NUL, which PostgreSQL text cannot hold, dropped."""
    return text.translate(_COPY_ESCAPES)


class LogWriter:
    """Collects one deployment's output lines and flushes them in batches."""

    def __init__(
        self,
        deployment_id: int,
        masker: Masker | Callable[[str], str] | None = None,
    ) -> None:
        from deployments.models import LogLine

        self.deployment_id = deployment_id
        self.mask = masker or Masker()
        # Safe to run twice: a re-run job continues numbering after the last stored line.
        last = LogLine.objects.filter(deployment_id=deployment_id).aggregate(m=Max("seq"))["m"]
        self.next_seq = (last or 0) + 1
        self.step_id: int | None = None
        self.step_name = ""
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(
            target=self._run, name=f"logs-{deployment_id}", daemon=True
        )
        self._flusher.start()

    def set_step(self, step_id: int | None, name: str) -> None:
        with self._lock:
            self.step_id, self.step_name = step_id, name

    def write(self, text: str, stream: str = Stream.STDOUT) -> None:
        """One line (or several, separated by newlines) from a runner."""
        self.write_lines(text.rstrip("\n").split("\n"), stream)

    __call__ = write

    def write_lines(self, lines: list[str], stream: str = Stream.STDOUT) -> None:
        """Hot path: every chunk a step's process prints arrives here as its
        complete lines. One masking pass over the whole chunk (the masker's
        patterns never cross a newline), one timestamp, one append."""
        if not lines:
            return
        masked = self.mask("\n".join(lines)).split("\n")
        now = timezone.now()
        with self._lock:
            idle = not self._pending
            seq, step_id, step_name = self.next_seq, self.step_id, self.step_name
            self._pending.extend(
                (seq + offset, step_id, step_name, stream, line, now)
                for offset, line in enumerate(masked)
            )
            self.next_seq = seq + len(masked)
            # Lines into an empty buffer wake the flusher (a first line after a
            # quiet spell goes at once, see _run); lines that come while it is
            # busy storing the last batch wait for it and go together.
            if idle or len(self._pending) >= MAX_BATCH:
                self._wake.set()

    def _take(self) -> list[tuple]:
        """The oldest pending lines, at most MAX_BATCH of them and about
        MAX_FRAME_BYTES of text: one batch is one WebSocket frame, kept far
        below the message limits of servers and proxies."""
        with self._lock:
            size = count = 0
            for count, line in enumerate(self._pending[:MAX_BATCH], start=1):  # noqa: B007
                size += len(line[4]) + LINE_OVERHEAD
                if size >= MAX_FRAME_BYTES:
                    break
            batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    def flush(self) -> int:
        """Store and send everything pending, batch by batch; returns the line count."""
        total = 0
        while batch := self._take():
            self._store_and_send(batch)
            total += len(batch)
        return total

    def _store_and_send(self, batch: list[tuple]) -> None:
        # Lines of one chunk share their timestamp: format each once.
        stamps = {at: at.isoformat() for *_, at in batch}
        store_lines(self.deployment_id, batch, stamps)
        lines = [
            line_payload(seq, name, stream, text, stamps[at])
            for seq, _, name, stream, text, at in batch
        ]
        self._send(lines_event(lines))

    def _send(self, event: dict) -> None:
        publish(group_name(self.deployment_id), event)

    def _run(self) -> None:
        last_flush = 0.0
        try:
            while not self._closed:
                self._wake.wait()  # set by new lines into an empty buffer, or by close()
                self._wake.clear()
                # At most one batch per MIN_FLUSH_GAP unless a full one waits:
                # the first line after a quiet spell goes at once, a steady
                # stream goes in a few frames a second (each frame costs every
                # viewer a message), a burst drains in full batches.
                wait = MIN_FLUSH_GAP - (time.monotonic() - last_flush)
                if wait > 0 and not self._closed and len(self._pending) < MAX_BATCH:
                    time.sleep(wait)
                last_flush = time.monotonic()
                if batch := self._take():
                    self._store_and_send(batch)
                if self._pending:
                    self._wake.set()
        finally:
            connection.close()

    def close(self) -> None:
        """Flush what is left and stop the flusher thread."""
        self._closed = True
        self._wake.set()
        self._flusher.join(timeout=10)
        self.flush()
        close_old_connections()


def broadcast_status(deployment_id: int, status: str) -> None:
    """Tell viewers the deployment changed state (they then re-sync from the database)."""
    publish(group_name(deployment_id), {"type": "deployment.status", "status": status,
                                        "at": time.time()})  # fmt: skip
