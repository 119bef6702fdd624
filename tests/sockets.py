"""A WebsocketCommunicator with waits sized for a loaded CI machine.

channels' defaults give a handshake, a single receive and a disconnect one
second: a consumer's connect makes database queries and a Redis group join,
which on a 2-core machine running the suite in parallel can take longer. A
wait that is long enough costs nothing when things work and still fails when
they don't. (receive_nothing keeps its short default: it waits for nothing.)
"""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

WAIT_SECONDS = 10


class Communicator(WebsocketCommunicator):
    async def connect(self, timeout: float = WAIT_SECONDS):
        return await super().connect(timeout)

    async def receive_output(self, timeout: float = WAIT_SECONDS):
        return await super().receive_output(timeout)

    # These pass their own one-second default down to receive_output.
    async def receive_from(self, timeout: float = WAIT_SECONDS):
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = WAIT_SECONDS):
        return await super().receive_json_from(timeout)

    async def disconnect(self, code: int = 1000, timeout: float = WAIT_SECONDS):
        # On timeout the consumer's disconnect handler would be cancelled midway.
        return await super().disconnect(code, timeout)
