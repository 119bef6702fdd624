"""One listener per ASGI process for all of its open dashboards.

A dashboard socket used to be a channel-layer consumer of its own, in every
group of the environments it shows: one change of one environment then woke
each of a thousand consumers (a queue put, a task, a dispatch and a JSON
encoding each) before anything was written to a socket. Here the process has
one channel, in the group of every environment some local dashboard shows;
a change is encoded once and written straight to the sockets that asked for
that environment, all at once (a slow reader delays only its own write).

Who may hear about which environment is decided by the consumer at connect
time (its roles), exactly as before; the hub only remembers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref

from channels.layers import get_channel_layer

from environments.live import LAYER, environment_group

log = logging.getLogger(__name__)

# One hub per event loop (an ASGI server runs one; tests run one per test).
_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub() -> Hub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer(LAYER)
        # environment id → consumers; a consumer counts from join(), so its
        # groups stay joined while it finishes its handshake.
        self.watchers: dict[int, set] = {}
        self.ready: set = set()  # accepted: may be written to (forget() drops it)
        self.joined: set[int] = set()  # environments whose group the channel is in
        self.channel: str | None = None
        self.listener: asyncio.Task | None = None
        # Joins and leaves one at a time: a group is never left while a
        # dashboard that just connected counts on it.
        self.lock = asyncio.Lock()

    async def join(self, consumer, environment_ids: list[int]) -> None:
        """Receive the changes of these environments for `consumer` (call
        before accepting its socket: once it is accepted, no change may be
        missed); it is written to from watch() on."""
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel("dashboards.")
                self.listener = asyncio.get_running_loop().create_task(self._listen())
            new = [pk for pk in environment_ids if pk not in self.joined]
            await asyncio.gather(
                *(self.layer.group_add(environment_group(pk), self.channel) for pk in new)
            )
            self.joined.update(new)
            for pk in environment_ids:
                self.watchers.setdefault(pk, set()).add(consumer)

    def watch(self, consumer) -> None:
        """Start writing the changes `consumer` joined for to its socket (accepted now)."""
        self.ready.add(consumer)

    async def forget(self, consumer) -> None:
        self.ready.discard(consumer)
        async with self.lock:
            left = []
            for pk, consumers in list(self.watchers.items()):
                consumers.discard(consumer)
                if not consumers:
                    del self.watchers[pk]
                    left.append(pk)
            self.joined.difference_update(left)
            await asyncio.gather(
                *(self.layer.group_discard(environment_group(pk), self.channel) for pk in left)
            )

    async def _listen(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
                if message.get("type") == "environment.changed":
                    await self.tell(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the listener must outlive one bad message
                log.exception("dashboard hub: message not delivered")
                await asyncio.sleep(0.5)

    async def tell(self, event: dict) -> None:
        consumers = [c for c in self.watchers.get(event["environment"], ()) if c in self.ready]
        if not consumers:
            return
        text = json.dumps(
            {"type": "changed", "environment": event["environment"], "what": event.get("what", "")}
        )
        frame = {"type": "websocket.send", "text": text}
        waiting = []
        for consumer in consumers:
            # Step each send by hand: an ASGI send to a socket with room in its
            # buffer finishes without waiting, and a task per socket (what
            # gather would make) cost more than the write itself.
            send = consumer.base_send(frame)
            try:
                send.send(None)
            except StopIteration:
                continue  # written
            except Exception:  # noqa: BLE001 - a socket that closed meanwhile fails alone
                continue
            # This socket's buffer is full (a slow reader): let it wait in a
            # task of its own, without holding up the rest.
            send.close()
            waiting.append(consumer.base_send(frame))
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
