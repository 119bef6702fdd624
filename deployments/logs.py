"""The per-line path of a running deployment: mask, number, store, broadcast.

This is the hot path (Terraform can print thousands of lines a second), so a
line costs one masking pass and an append under a lock; a flusher thread
writes batches with one INSERT and sends each batch to the deployment's
channel group as one message. Lines are stored before they are sent, so a
viewer that misses a message can always fill the gap from the database.
"""

from __future__ import annotations

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


def group_name(deployment_id: int) -> str:
    return f"deployment-{deployment_id}"


def line_payload(seq: int, step: str, stream: str, text: str, at) -> dict:
    return {"seq": seq, "step": step, "stream": stream, "text": text, "at": at.isoformat()}


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
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def flush(self) -> int:
        from deployments.models import LogLine

        batch = self._take()
        if not batch:
            return 0
        LogLine.objects.bulk_create(
            LogLine(deployment_id=self.deployment_id, seq=seq, step_id=step_id,
                    stream=stream, text=text, at=at)
            for seq, step_id, _, stream, text, at in batch
        )  # fmt: skip
        lines = [
            line_payload(seq, name, stream, text, at) for seq, _, name, stream, text, at in batch
        ]
        async_to_sync(self._layer.group_send)(
            group_name(self.deployment_id), {"type": "log.lines", "lines": lines}
        )
        return len(batch)

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
