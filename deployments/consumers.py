"""Live deployment logs over WebSocket.

A viewer connects with the last seq it has (`?after=N`). The consumer joins
the group first, then sends the stored backlog, then live batches; anything a
live batch skips (a late join, a dropped message) is read from the database,
and anything already sent is dropped. Hence: in order, no gap, no duplicate.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from deployments.logs import (
    LINE_OVERHEAD,
    LOG_CHANNEL_LAYER,
    MAX_FRAME_BYTES,
    group_name,
    line_payload,
)

BACKLOG_CHUNK = 2000


def frames(lines: list[dict]) -> list[list[dict]]:
    """Split a backlog into frames of about MAX_FRAME_BYTES of text each
    (a frame stays far below the 1 MiB message limits common in WebSocket
    servers and proxies, and a long backlog renders piece by piece)."""
    chunks: list[list[dict]] = []
    size = MAX_FRAME_BYTES
    for line in lines:
        size += len(line["text"]) + LINE_OVERHEAD
        if size >= MAX_FRAME_BYTES:
            chunks.append([])
            size = len(line["text"]) + LINE_OVERHEAD
        chunks[-1].append(line)
    return chunks


@database_sync_to_async
def _can_view(user, deployment_id: int) -> bool:
    from deployments.models import Deployment
    from portal.choices import Role
    from portal.roles import has_role

    if not user.is_authenticated:
        return False
    environment_id = (
        Deployment.objects.filter(pk=deployment_id).values_list("environment_id", flat=True).first()
    )
    return environment_id is not None and has_role(user, environment_id, Role.VIEWER)


@database_sync_to_async
def _lines_after(deployment_id: int, after: int) -> tuple[list[dict], str]:
    from deployments.models import Deployment, LogLine

    rows = (
        LogLine.objects.filter(deployment_id=deployment_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "step__name", "stream", "text", "at")[:BACKLOG_CHUNK]
    )
    lines = [
        line_payload(seq, step or "", stream, text, at) for seq, step, stream, text, at in rows
    ]
    status = Deployment.objects.filter(pk=deployment_id).values_list("status", flat=True).first()
    return lines, status or ""


class DeploymentLogConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = LOG_CHANNEL_LAYER

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
        self.last_seq = int(after) if after.isdigit() else 0
        self.group = group_name(self.deployment_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.catch_up()

    async def disconnect(self, code) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def catch_up(self) -> str:
        """Send everything stored after last_seq, in chunks, then the status."""
        while True:
            lines, status = await _lines_after(self.deployment_id, self.last_seq)
            for frame in frames(lines):
                await self.send_json({"type": "lines", "lines": frame})
            if lines:
                self.last_seq = lines[-1]["seq"]
            if len(lines) < BACKLOG_CHUNK:
                await self.send_json({"type": "status", "status": status})
                return status

    async def dispatch(self, message: dict) -> None:
        # Channels runs close_old_connections in the sync thread before every
        # handler: one thread hop per batch and viewer, all through a single
        # thread, which capped the fan-out. The live path uses no database;
        # its gap filling goes through database_sync_to_async, which cleans
        # connections up itself.
        if message["type"] == "log.lines":
            await self.log_lines(message)
            return
        await super().dispatch(message)

    async def log_lines(self, event: dict) -> None:
        if event["last"] <= self.last_seq:
            return
        if event["first"] > self.last_seq + 1:
            await self.catch_up()  # fill the gap from the database
            if event["last"] <= self.last_seq:
                return
        if event["first"] == self.last_seq + 1:
            # The usual case: send the frame the writer encoded, as is.
            await self.send(text_data=event["frame"])
        else:  # overlaps what this viewer already has: send only the rest
            lines = json.loads(event["frame"])["lines"]
            await self.send_json(
                {"type": "lines", "lines": [line for line in lines if line["seq"] > self.last_seq]}
            )
        self.last_seq = event["last"]

    async def deployment_status(self, event: dict) -> None:
        await self.catch_up()

    async def receive_json(self, content, **kwargs) -> None:
        """Viewers only listen; anything they send is ignored."""
