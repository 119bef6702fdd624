"""One channel per ASGI process, in the groups its open sockets listen to.

A WebSocket consumer with a channel of its own gets every group message
through that channel: the pub/sub layer decodes the message once per
consumer, queues it and wakes the consumer's task, which dispatches it
(`asyncio.wait` over two tasks) before anything is written to a socket.
With a thousand dashboards, or twenty viewers of a deployment's log burst,
that was most of the server's work. A hub is the process's one member of
those groups: it decodes a message once and writes to the sockets it
concerns itself, stepping each ASGI send inline (`step_send`).

Subclasses name the channel layer, the group of a key (an environment, a
deployment) and what to do with a message (`deliver`). One hub per event
loop and subclass (`of_this_loop`): an ASGI server runs one loop, tests run
one per test.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


class SocketHub:
    alias: str  # the channel layer
    group_of: Callable[[int], str]  # a key's group
    channel_prefix: str

    _hubs: weakref.WeakKeyDictionary  # set per subclass, see __init_subclass__

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._hubs = weakref.WeakKeyDictionary()

    @classmethod
    def of_this_loop(cls):
        loop = asyncio.get_running_loop()
        if loop not in cls._hubs:
            cls._hubs[loop] = cls()
        return cls._hubs[loop]

    def __init__(self) -> None:
        self.layer = get_channel_layer(self.alias)
        # key → consumers; a consumer counts from join(), so its groups stay
        # joined while it finishes its handshake.
        self.watchers: dict[int, set] = {}
        self.joined: set[int] = set()  # keys whose group the channel is in
        self.channel: str | None = None
        self.listener: asyncio.Task | None = None
        # Joins and leaves one at a time: a group is never left while a
        # socket that just connected counts on it.
        self.lock = asyncio.Lock()

    async def join(self, consumer, keys: Iterable[int]) -> None:
        """Hear the messages of these keys' groups for `consumer`. Call it
        before accepting the socket: once accepted, nothing may be missed."""
        keys = list(keys)
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel(self.channel_prefix)
                self.listener = asyncio.get_running_loop().create_task(self._listen())
            new = [key for key in keys if key not in self.joined]
            await asyncio.gather(
                *(self.layer.group_add(self.group_of(key), self.channel) for key in new)
            )
            self.joined.update(new)
            for key in keys:
                self.watchers.setdefault(key, set()).add(consumer)

    async def forget(self, consumer) -> None:
        async with self.lock:
            left = []
            for key, consumers in list(self.watchers.items()):
                consumers.discard(consumer)
                if not consumers:
                    del self.watchers[key]
                    left.append(key)
            self.joined.difference_update(left)
            await asyncio.gather(
                *(self.layer.group_discard(self.group_of(key), self.channel) for key in left)
            )

    async def _listen(self) -> None:
        while True:
            try:
                await self.deliver(await self.layer.receive(self.channel))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the listener must outlive one bad message
                log.exception("%s: message not delivered", type(self).__name__)
                await asyncio.sleep(0.5)

    async def deliver(self, message: dict) -> None:
        raise NotImplementedError


def step_send(consumer, message: dict) -> bool | None:
    """Send `message` on the consumer's socket without a task: True once
    written, False if the socket's buffer is full (nothing was written: the
    caller sends it again the ordinary way, awaited), None if the socket
    failed (it is closing; its disconnect follows).

    An ASGI send to a socket with room in its buffer finishes without
    waiting, and a task per socket cost more than the write itself. A
    server that has to wait waits before writing anything: uvicorn's send
    first awaits the socket being writable, and channels' test communicator
    never waits."""
    send = consumer.base_send(message)
    try:
        send.send(None)
    except StopIteration:
        return True
    except Exception:  # noqa: BLE001 - a socket that closed meanwhile fails alone
        return None
    send.close()
    return False
