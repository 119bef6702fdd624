"""One listener per ASGI process for all of its open dashboards.

A dashboard socket used to be a channel-layer consumer of its own, in every
group of the environments it shows: one change of one environment then woke
each of a thousand consumers (a queue put, a task, a dispatch and a JSON
encoding each) before anything was written to a socket. Here the process has
one channel, in the group of every environment some local dashboard shows
(portal/core/socket_hub.py); a change is encoded once and written straight
to the sockets that asked for that environment, all at once (a slow reader
delays only its own write).

Who may hear about which environment is decided by the consumer at connect
time (its roles), exactly as before; the hub only remembers it.
"""

from __future__ import annotations

import asyncio
import json

from environments.live import LAYER, environment_group
from portal.core.socket_hub import SocketHub, step_send


class DashboardHub(SocketHub):
    alias = LAYER
    group_of = staticmethod(environment_group)
    channel_prefix = "dashboards."

    def __init__(self) -> None:
        super().__init__()
        self.ready: set = set()  # accepted: may be written to (forget() drops it)

    def watch(self, consumer) -> None:
        """Start writing the changes `consumer` joined for to its socket (accepted now)."""
        self.ready.add(consumer)

    async def forget(self, consumer) -> None:
        self.ready.discard(consumer)
        await super().forget(consumer)

    async def deliver(self, message: dict) -> None:
        if message.get("type") == "environment.changed":
            await self.tell(message)

    async def tell(self, event: dict) -> None:
        consumers = [c for c in self.watchers.get(event["environment"], ()) if c in self.ready]
        if not consumers:
            return
        text = json.dumps(
            {"type": "changed", "environment": event["environment"], "what": event.get("what", "")}
        )
        frame = {"type": "websocket.send", "text": text}
        # A socket whose buffer is full (a slow reader) waits in a task of its
        # own, without holding up the rest.
        waiting = [consumer.base_send(frame) for consumer in consumers
                   if step_send(consumer, frame) is False]  # fmt: skip
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)


def hub() -> DashboardHub:
    return DashboardHub.of_this_loop()
