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

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections, connection
from django.db.models import Max
from django.utils import timezone

from deployments.choices import Stream
from deployments.runners.masking import Masker

FLUSH_INTERVAL = 0.02  # seconds a line may wait for its batch
MAX_BATCH = 500
# Text per batch (one WebSocket frame): well under daphne's 1 MiB frame limit,
# counting JSON escapes and each line's seq/step/stream/at.
MAX_FRAME_BYTES = 256 * 1024
LINE_OVERHEAD = 120


def group_name(deployment_id: int) -> str:
    return f"deployment-{deployment_id}"


def line_payload(seq: int, step: str, stream: str, text: str, at) -> dict:
    return {"seq": seq, "step": step, "stream": stream, "text": text, "at": at.isoformat()}


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


class LogWriter:
    """Collects one deployment's output lines and flushes them in batches."""

    def __init__(
        self,
        deployment_id: int,
        masker: Masker | Callable[[str], str] | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        from deployments.models import LogLine

        self.deployment_id = deployment_id
        self.mask = masker or Masker()
        self.flush_interval = flush_interval
        # Safe to run twice: a re-run job continues numbering after the last stored line.
        last = LogLine.objects.filter(deployment_id=deployment_id).aggregate(m=Max("seq"))["m"]
        self.next_seq = (last or 0) + 1
        self.step_id: int | None = None
        self.step_name = ""
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._layer = get_channel_layer()
        self._flusher = threading.Thread(
            target=self._run, name=f"logs-{deployment_id}", daemon=True
        )
        self._flusher.start()

    def set_step(self, step_id: int | None, name: str) -> None:
        with self._lock:
            self.step_id, self.step_name = step_id, name

    def write(self, text: str, stream: str = Stream.STDOUT) -> None:
        """Hot path: called once per output line by the runners."""
        masked = self.mask(text.rstrip("\n"))
        now = timezone.now()
        with self._lock:
            for line in masked.split("\n"):
                self._pending.append(
                    (self.next_seq, self.step_id, self.step_name, stream, line, now)
                )
                self.next_seq += 1
            if len(self._pending) >= MAX_BATCH:
                self._wake.set()

    __call__ = write

    def _take(self) -> list[tuple]:
        """The oldest pending lines, at most MAX_BATCH of them and about
        MAX_FRAME_BYTES of text: one batch is one WebSocket frame, and daphne
        drops the viewer's socket on a frame over 1 MiB."""
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
        from deployments.models import LogLine

        LogLine.objects.bulk_create(
            LogLine(deployment_id=self.deployment_id, seq=seq, step_id=step_id,
                    stream=stream, text=text, at=at)
            for seq, step_id, _, stream, text, at in batch
        )  # fmt: skip
        lines = [
            line_payload(seq, name, stream, text, at) for seq, _, name, stream, text, at in batch
        ]
        async_to_sync(self._layer.group_send)(group_name(self.deployment_id), lines_event(lines))

    def _run(self) -> None:
        try:
            while not self._closed:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                self.flush()
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
    layer = get_channel_layer()
    async_to_sync(layer.group_send)(
        group_name(deployment_id),
        {"type": "deployment.status", "status": status, "at": time.time()},
    )
