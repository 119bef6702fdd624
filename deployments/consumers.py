"""Live deployment logs over WebSocket.

A viewer connects with the last seq it has (`?after=N`). The consumer joins
the process's log hub first (deployments/log_hub.py), then sends the stored
backlog, then live batches; anything a live batch skips (a late join, a
dropped message) is read from the database, and anything already sent is
dropped. Hence: in order, no gap, no duplicate. The hub writes a batch that
follows on from what a viewer has itself; everything else comes here, to
the viewer's own queue, worked through in order.

The writer sends a batch before its storer has written it (deployments/logs.py),
so lines a viewer missed may reach the database a few ms after the batch that
shows the gap; the consumer then waits for them (GAP_WAIT_SECONDS at most,
after which the batch is left for the next one, or the status, to fill).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from deployments.log_hub import log_hub
from deployments.logs import LINE_OVERHEAD, MAX_FRAME_BYTES, line_runs, runs_after, runs_frame
from deployments.models import Deployment, LogLine
from portal.core.choices import Role
from portal.core.roles import has_role

log = logging.getLogger(__name__)

BACKLOG_CHUNK = 2000
# How long a viewer waits for the storer to write lines it missed, retrying every GAP_POLL_SECONDS.
GAP_WAIT_SECONDS = 2.0
GAP_POLL_SECONDS = 0.01


def frames(rows: list[tuple]) -> list[str]:
    """A backlog of (seq, step, stream, text, at) rows as frames of about
    MAX_FRAME_BYTES of text each (a frame stays far below the 1 MiB message
    limits common in WebSocket servers and proxies, and a long backlog renders
    piece by piece)."""
    chunks: list[list[tuple]] = []
    size = MAX_FRAME_BYTES
    for row in rows:
        size += len(row[3]) + LINE_OVERHEAD
        if size >= MAX_FRAME_BYTES:
            chunks.append([])
            size = len(row[3]) + LINE_OVERHEAD
        chunks[-1].append(row)
    return [runs_frame(line_runs(chunk)) for chunk in chunks]


@database_sync_to_async
def _can_view(user, deployment_id: int) -> bool:
    if not user.is_authenticated:
        return False
    environment_id = (
        Deployment.objects.filter(pk=deployment_id).values_list("environment_id", flat=True).first()
    )
    return environment_id is not None and has_role(user, environment_id, Role.VIEWER)


@database_sync_to_async
def _lines_after(deployment_id: int, after: int) -> tuple[list[tuple], str]:
    """Up to BACKLOG_CHUNK stored (seq, step, stream, text, at) rows after
    `after`, and the deployment's status."""
    rows = [
        (seq, step or "", stream, text, at)
        for seq, step, stream, text, at in LogLine.objects.filter(
            deployment_id=deployment_id, seq__gt=after
        )
        .order_by("seq")
        .values_list("seq", "step__name", "stream", "text", "at")[:BACKLOG_CHUNK]
    ]
    status = Deployment.objects.filter(pk=deployment_id).values_list("status", flat=True).first()
    return rows, status or ""


class DeploymentLogConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: the process's log hub receives for every viewer.
    channel_layer_alias = None

    async def connect(self) -> None:
        self.deployment_id = int(self.scope["url_route"]["kwargs"]["pk"])
        if not await _can_view(self.scope["user"], self.deployment_id):
            # Accept, then close at once with 4403 and nothing sent: a handshake
            # refused before accept reaches the browser as 1006, and the page
            # could not tell "no access" from "network lost" (it would retry).
            await self.accept()
            await self.close(code=4403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        after = query.get("after", ["0"])[0]
        await self.follow(int(after) if after.isdigit() else 0)

    async def follow(self, after: int) -> None:
        """Join the hub, accept, send what is stored after `after`, then
        what the hub heard meanwhile; from then on, the hub writes."""
        self.last_seq = after
        # Busy until the backlog is sent: what the hub hears meanwhile waits here.
        self.inbox: deque[dict] = deque()
        self.busy = True
        self.gone = False
        self.working: asyncio.Task | None = None
        await log_hub().join(self, [self.deployment_id])
        try:
            await self.accept()
            await self.catch_up()
            await self.work_through_inbox()
        except BaseException:  # the socket ends here: the hub must not keep queueing for it
            await self.disconnect(None)
            raise

    async def disconnect(self, code) -> None:
        if hasattr(self, "inbox"):
            self.gone = True
            await log_hub().forget(self)
            if self.working is not None:
                self.working.cancel()

    def queue(self, message: dict) -> None:
        """A message for this viewer that the hub did not write itself (see
        deployments/log_hub.py), handled after any before it."""
        if self.gone:
            return
        self.inbox.append(message)
        if not self.busy:
            self.busy = True
            self.working = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            await self.work_through_inbox()
        except Exception:  # noqa: BLE001 - its socket failed: the disconnect follows
            log.debug("log viewer of deployment %s stopped", self.deployment_id, exc_info=True)
            self.gone = True
            self.inbox.clear()

    async def work_through_inbox(self) -> None:
        while self.inbox:
            message = self.inbox.popleft()
            if message["type"] == "log.lines":
                await self.log_lines(message)
            elif message["type"] == "deployment.status":
                await self.catch_up()
        # No await between the last check and this: the hub writes again from here.
        self.busy = False

    async def catch_up(self, through: int = 0) -> str:
        """Send everything stored after last_seq, in chunks, then the status;
        with `through`, first wait (a little) until the storer has written
        that far."""
        deadline = asyncio.get_running_loop().time() + GAP_WAIT_SECONDS
        while True:
            lines, status = await _lines_after(self.deployment_id, self.last_seq)
            for frame in frames(lines):
                await self.send(text_data=frame)
            if lines:
                self.last_seq = lines[-1][0]
            if len(lines) == BACKLOG_CHUNK:
                continue
            if self.last_seq >= through or asyncio.get_running_loop().time() > deadline:
                await self.send_json({"type": "status", "status": status})
                return status
            await asyncio.sleep(GAP_POLL_SECONDS)

    async def log_lines(self, event: dict) -> None:
        if event["last"] <= self.last_seq:
            return
        if event["first"] > self.last_seq + 1:
            await self.catch_up(through=event["first"] - 1)  # fill the gap from the database
            if event["last"] <= self.last_seq or event["first"] > self.last_seq + 1:
                return  # all sent, or the gap not stored yet: the next batch or status fills it
        if event["first"] == self.last_seq + 1:
            # The usual case: send the frame the writer encoded, as is.
            await self.send(text_data=event["frame"])
        else:  # overlaps what this viewer already has: send only the rest
            runs = json.loads(event["frame"])["runs"]
            await self.send(text_data=runs_frame(runs_after(runs, self.last_seq)))
        self.last_seq = event["last"]

    async def receive_json(self, content, **kwargs) -> None:
        """Viewers only listen; anything they send is ignored."""
