"""The per-line path of a running deployment: mask, number, store, broadcast.

This is the hot path (Terraform can print thousands of lines a second), so
a chunk of lines (what one read of a step's output holds) costs one masking
pass and one append under a lock, and travels as a chunk: a sender thread
sends each batch of chunks to the deployment's channel group as one
message, and a storer thread writes the batches with COPY right behind it,
in order. The database always holds every line up to some seq, so a viewer
that misses a message fills the gap from it (waiting for the storer if it
is a few ms behind).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Max
from django.utils import timezone

from deployments.choices import Stream
from deployments.models import LogLine
from deployments.viewers import group_name
from environments.live import LAYER, publish
from portal.cloud.masking import Masker
from portal.core.observability import LOG_STORE_LATENCY

log = logging.getLogger(__name__)

MIN_FLUSH_GAP = 0.025
MAX_BATCH = 500
# Lines per COPY when the storer has fallen behind the sender (a burst).
STORE_BATCH = 5000
STORE_RETRY_SECONDS = 0.5
# How long close() keeps trying to store what is left (a database restart
# takes seconds; the lines exist nowhere else).
CLOSE_STORE_SECONDS = 120
# Text per batch (one WebSocket frame): well under the 1 MiB message limits
# common in WebSocket servers and proxies, counting JSON escapes and each
# line's seq/step/stream/at.
MAX_FRAME_BYTES = 256 * 1024
LINE_OVERHEAD = 120


# The channel layer of live logs (see settings.CHANNEL_LAYERS).
LOG_CHANNEL_LAYER = LAYER  # the one publish() sends to


class Chunk(NamedTuple):
    """Lines seq, seq + 1, ... of one step, stream and time: what one read of
    a step's output held (or several reads of one millisecond)."""

    seq: int
    step_id: int | None
    step: str
    stream: str
    texts: list[str]
    at: datetime


def line_payload(seq: int, step: str, stream: str, text: str, at) -> dict:
    """A line as viewers get it; `at` a datetime, or its isoformat() already made."""
    at = at if isinstance(at, str) else at.isoformat()
    return {"seq": seq, "step": step, "stream": stream, "text": text, "at": at}


def line_runs(lines) -> list[dict]:
    """Lines as the WebSocket sends them: runs of consecutive lines of one
    step, stream and time, `{"seq": first, "step", "stream", "at", "texts"}`,
    from (seq, step, stream, text, at) tuples (`at` a datetime or its
    isoformat()).

    The lines of one chunk a process printed share step, stream and time, so
    a batch of 500 is one or two runs: encoding it is one json.dumps of a few
    strings lists instead of 500 dicts, and the frame is about half the bytes
    of a list of line objects (the HTTP API still gives line objects)."""
    runs: list[dict] = []
    texts: list[str] = []
    key = None
    next_seq = 0
    for seq, step, stream, text, at in lines:
        if seq != next_seq or (step, stream, at) != key:
            key = (step, stream, at)
            texts = []
            at = at if isinstance(at, str) else at.isoformat()
            runs.append({"seq": seq, "step": step, "stream": stream, "at": at, "texts": texts})
        texts.append(text)
        next_seq = seq + 1
    return runs


def runs_after(runs: list[dict], after: int) -> list[dict]:
    """The runs' lines whose seq is above `after`."""
    kept = []
    for run in runs:
        skip = after + 1 - run["seq"]
        if skip < len(run["texts"]):
            kept.append(
                {**run, "seq": run["seq"] + max(skip, 0), "texts": run["texts"][max(skip, 0) :]}
            )
    return kept


def runs_frame(runs: list[dict]) -> str:
    return json.dumps({"type": "runs", "runs": runs})


def lines_event(deployment_id: int, runs: list[dict]) -> dict:
    """The group message for a batch: the viewers' frame encoded once here, not
    once per viewer in the server (with 20 viewers, encoding was most of its
    CPU); `first`/`last` let the server check each viewer's continuity
    without decoding it, `deployment` tells its log hub whose lines they are."""
    return {
        "type": "log.lines",
        "deployment": deployment_id,
        "first": runs[0]["seq"],
        "last": runs[-1]["seq"] + len(runs[-1]["texts"]) - 1,
        "frame": runs_frame(runs),
    }


def store_lines(deployment_id: int, batch: list[Chunk]) -> None:
    """INSERT one batch of chunks.

    On PostgreSQL through COPY, which takes a batch of lines about ten times
    faster than a multi-row INSERT built by the ORM; elsewhere (SQLite in
    the demo) through bulk_create.
    """
    if connection.vendor != "postgresql":
        LogLine.objects.bulk_create(
            LogLine(deployment_id=deployment_id, seq=seq + offset, step_id=step_id,
                    stream=stream, text=text, at=at)
            for seq, step_id, _, stream, texts, at in batch
            for offset, text in enumerate(texts)
        )  # fmt: skip
        return
    table = LogLine._meta.db_table
    columns = "deployment_id, seq, step_id, stream, text, at"
    data = copy_rows(deployment_id, batch)
    with transaction.atomic(), connection.cursor() as cursor:
        # Log lines don't wait for the WAL flush: a commit stuck behind a
        # checkpoint's I/O held every viewer's next lines for hundreds of ms.
        # A crash of the database server may lose the last fraction of a second
        # of lines it had acknowledged; state changes and audit events commit
        # in their own transactions, durably as always.
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(data)


def record_store_latency(batch: list[Chunk]) -> None:
    """How long the batch's lines took from print to stored, for /metrics:
    one entry per chunk, whose lines share their time."""
    stored = timezone.now()
    LOG_STORE_LATENCY.observe(
        [((stored - chunk.at).total_seconds(), len(chunk.texts)) for chunk in batch]
    )


NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": ""})
_IN_LINE_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\0": ""})


def copy_rows(deployment_id: int, batch: list[Chunk]) -> str:
    """A batch of chunks as COPY's text format, in one string (a write_row per
    line costs more than the server's work). The storer builds it while the
    sender wants the interpreter, so it works a chunk at a time: one escape
    pass over the chunk's joined text (its lines hold no newline: LogWriter
    splits on them), one isoformat() of its time and one C-level format per
    line."""
    parts = []
    for seq, step_id, _, stream, lines, at in batch:
        texts = "\n".join(lines).translate(_IN_LINE_ESCAPES).split("\n")
        if len(texts) != len(lines):  # a newline after all: escape line by line
            texts = [copy_text(line) for line in lines]
        row_format = (
            f"{deployment_id}\t{{}}\t{NULL if step_id is None else step_id}\t{stream}\t{{}}"
            f"\t{at.isoformat()}\n"
        )
        parts.append("".join(map(row_format.format, range(seq, seq + len(texts)), texts)))
    return "".join(parts)


def chunk_runs(chunks: list[Chunk]) -> list[dict]:
    """The runs of a batch of chunks (see line_runs): chunks of one step,
    stream and time make one run, so a burst's frame is a run or two."""
    runs: list[dict] = []
    key = None
    next_seq = 0
    for seq, _, step, stream, texts, at in chunks:
        if seq == next_seq and (step, stream, at) == key:
            runs[-1]["texts"].extend(texts)
        else:
            key = (step, stream, at)
            runs.append(
                # A copy: the chunk's own list is the storer's.
                {"seq": seq, "step": step, "stream": stream, "at": at.isoformat(),
                 "texts": list(texts)}
            )  # fmt: skip
        next_seq = seq + len(texts)
    return runs


def _lines_in_frame(texts: list[str], size: int) -> int:
    """How many of `texts` go into a frame already holding `size`: up to the
    line that takes it to MAX_FRAME_BYTES."""
    for count, text in enumerate(texts, start=1):
        size += len(text) + LINE_OVERHEAD
        if size >= MAX_FRAME_BYTES:
            return count
    return len(texts)


def split_chunk(chunk: Chunk, count: int) -> tuple[Chunk, Chunk]:
    """A chunk's first `count` lines and the rest, as two chunks."""
    return (
        chunk._replace(texts=chunk.texts[:count]),
        chunk._replace(seq=chunk.seq + count, texts=chunk.texts[count:]),
    )


def copy_text(text: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage
    return escaped; NUL, which PostgreSQL text cannot hold, dropped."""
    return text.translate(_COPY_ESCAPES)


class LogWriter:
    """Collects one deployment's output lines, sends them to viewers in
    batches and stores them right behind.

    Two threads: the sender takes numbered lines in batches (one WebSocket
    frame each) and publishes them; the storer writes what was sent, in order,
    merging whatever has queued up into one COPY. Sending does not wait for
    the database, so a burst reaches viewers at the speed of Redis rather
    than of COPY; and as one storer writes in order, the database always holds
    every line up to some seq, which is what lets a viewer fill a gap from it
    (deployments/consumers.py). Use as a context manager, or call close().
    """

    def __init__(
        self,
        deployment_id: int,
        masker: Masker | Callable[[str], str] | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.mask = masker or Masker()
        # Safe to run twice: a re-run job continues numbering after the last stored line.
        last = LogLine.objects.filter(deployment_id=deployment_id).aggregate(m=Max("seq"))["m"]
        self.next_seq = (last or 0) + 1
        self.step_id: int | None = None
        self.step_name = ""
        self._at_ms, self._at = 0, timezone.now()  # see _now()
        self._pending: list[Chunk] = []  # numbered, not sent yet
        self._pending_lines = 0  # their lines (the sender's "is a batch full?")
        self._unstored: list[Chunk] = []  # sent (or being sent), not stored yet
        self._lock = threading.Lock()  # guards the two lists and the numbering
        self._send_lock = threading.Lock()  # one batch at a time goes out, in order
        self._store_lock = threading.Lock()  # one COPY at a time, in order
        self._wake = threading.Event()
        self._store_wake = threading.Event()
        self._closed = False
        self._sender = threading.Thread(
            target=self._send_loop, name=f"logs-{deployment_id}-send", daemon=True
        )
        self._storer = threading.Thread(
            target=self._store_loop, name=f"logs-{deployment_id}-store", daemon=True
        )
        self._sender.start()
        self._storer.start()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

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
        # NUL, which PostgreSQL text cannot hold, goes here, so viewers and
        # every database get the same text.
        masked = self.mask("\n".join(lines).replace("\0", "")).split("\n")
        with self._lock:
            now = self._now()
            idle = not self._pending
            seq, step_id, name = self.next_seq, self.step_id, self.step_name
            last = self._pending[-1] if self._pending else None
            if (
                last and last.at is now and last.stream == stream
                and last.step_id == step_id and last.step == name
            ):  # fmt: skip
                last.texts.extend(masked)  # the same step, stream and millisecond
            else:
                self._pending.append(Chunk(seq, step_id, name, stream, masked, now))
            self._pending_lines += len(masked)
            self.next_seq = seq + len(masked)
            # Lines into an empty buffer wake the sender (a first line after a
            # quiet spell goes at once, see _send_loop); lines that come while
            # it waits out MIN_FLUSH_GAP go with the next batch, unless a full
            # batch is ready. (Setting a set Event takes its lock all the same,
            # once per chunk of a burst while a full batch waits.)
            if (idle or self._pending_lines >= MAX_BATCH) and not self._wake.is_set():
                self._wake.set()

    def _now(self) -> datetime:
        """When a chunk was read, to the millisecond; chunks read within one
        millisecond share one datetime. A tool printing flat out comes a line
        or two per read: with a time each, every read was a run of its own in
        the viewers' frames, the COPY and the latency histogram; sharing it
        makes a run of all of them (one isoformat, one frame header)."""
        ms = time.time_ns() // 1_000_000
        if ms != self._at_ms:
            self._at_ms, self._at = ms, datetime.fromtimestamp(ms / 1000, tz=UTC)
        return self._at

    def _take(self) -> list[Chunk]:
        """The oldest pending chunks, at most MAX_BATCH lines and about
        MAX_FRAME_BYTES of text (the last chunk cut to fit, its rest left
        pending): one batch is one WebSocket frame, kept far below the
        message limits of servers and proxies."""
        with self._lock:
            batch: list[Chunk] = []
            whole = lines = size = 0  # whole: chunks taken entire
            for chunk in self._pending:
                texts = chunk.texts
                count = min(len(texts), MAX_BATCH - lines)
                chunk_size = sum(map(len, texts[:count])) + LINE_OVERHEAD * count
                if size + chunk_size >= MAX_FRAME_BYTES:
                    count = _lines_in_frame(texts[:count], size)
                    size = MAX_FRAME_BYTES
                else:
                    size += chunk_size
                lines += count
                if count < len(texts):
                    head, self._pending[whole] = split_chunk(chunk, count)
                    batch.append(head)
                    break
                batch.append(chunk)
                whole += 1
                if lines >= MAX_BATCH or size >= MAX_FRAME_BYTES:
                    break
            del self._pending[:whole]
            self._pending_lines -= lines
        return batch

    def _send_batch(self) -> int:
        """Hand the next batch to the storer and publish it; its line count."""
        with self._send_lock:
            batch = self._take()
            if not batch:
                return 0
            with self._lock:
                self._unstored.extend(batch)
            self._store_wake.set()
            try:
                self._send(lines_event(self.deployment_id, chunk_runs(batch)))
            except Exception:  # viewers fill the gap from the database later
                log.warning("sending log lines of deployment %s failed", self.deployment_id,
                            exc_info=True)  # fmt: skip
        return sum(len(chunk.texts) for chunk in batch)

    def _send(self, event: dict) -> None:
        publish(group_name(self.deployment_id), event)

    def _store_queued(self) -> int:
        """Store everything sent so far, in one COPY per STORE_BATCH lines (or
        up to the end of the chunk that reaches it). A batch leaves the queue
        only once stored: after a failure the next attempt starts from it, so
        the stored lines stay gap-free."""
        total = 0
        with self._store_lock:
            while True:
                with self._lock:
                    batch, lines = [], 0
                    for chunk in self._unstored:
                        if lines >= STORE_BATCH:
                            break
                        batch.append(chunk)
                        lines += len(chunk.texts)
                if not batch:
                    return total
                try:
                    store_lines(self.deployment_id, batch)
                except IntegrityError:
                    # The connection dropped after the database had committed
                    # this batch (one COPY: all of it or none), before we heard.
                    connection.close()
                    if not self._stored(batch[0].seq):
                        raise
                record_store_latency(batch)
                with self._lock:
                    del self._unstored[: len(batch)]
                total += lines

    def _stored(self, seq: int) -> bool:
        return LogLine.objects.filter(deployment_id=self.deployment_id, seq=seq).exists()

    def flush(self) -> int:
        """Send and store everything written so far; returns the lines sent."""
        total = 0
        while sent := self._send_batch():
            total += sent
        self._store_queued()
        return total

    def _send_loop(self) -> None:
        last_sent = 0.0
        while not self._closed:
            self._wake.wait()  # set by lines into an empty buffer, a full batch, or close()
            self._wake.clear()
            # At most one batch per MIN_FLUSH_GAP unless a full one waits: the
            # first line after a quiet spell goes at once, a steady stream goes
            # in a few frames a second (each frame costs every viewer a
            # message), a burst goes in full batches as soon as they fill.
            due = last_sent + MIN_FLUSH_GAP
            while not self._closed and self._pending_lines < MAX_BATCH:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
                self._wake.clear()
            last_sent = time.monotonic()
            self._send_batch()
            if self._pending:
                self._wake.set()

    def _store_loop(self) -> None:
        try:
            while not self._closed:
                self._store_wake.wait()
                self._store_wake.clear()
                try:
                    self._store_queued()
                except Exception:  # kept queued; retried on the next wake, and by close()
                    log.warning("storing log lines of deployment %s failed", self.deployment_id,
                                exc_info=True)  # fmt: skip
                    connection.close()
                    time.sleep(STORE_RETRY_SECONDS)
                    self._store_wake.set()
        finally:
            connection.close()

    def close(self) -> None:
        """Send and store what is left and stop both threads. A failed store
        is tried again on a new connection, as the storer thread would, for
        CLOSE_STORE_SECONDS; then it raises (the caller's step or job fails)."""
        self._closed = True
        self._wake.set()
        self._store_wake.set()
        self._sender.join(timeout=10)
        self._storer.join(timeout=10)
        give_up_at = time.monotonic() + CLOSE_STORE_SECONDS
        try:
            while True:
                try:
                    self.flush()
                    return
                except DatabaseError:
                    if time.monotonic() >= give_up_at:
                        raise
                    log.warning("storing log lines of deployment %s failed; retrying",
                                self.deployment_id, exc_info=True)  # fmt: skip
                    connection.close()  # a broken connection is not used again
                    time.sleep(STORE_RETRY_SECONDS)
        finally:
            close_old_connections()
