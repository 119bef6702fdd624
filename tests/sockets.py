"""A WebsocketCommunicator with waits sized for a loaded CI machine.

channels' defaults give a handshake and a single receive one second: a
consumer's connect makes database queries and a Redis group join, which on a
2-core machine running the suite in parallel can take longer. A wait that is
long enough costs nothing when things work and still fails when they don't.
"""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

WAIT_SECONDS = 10


class Communicator(WebsocketCommunicator):
    async def connect(self, timeout: float = WAIT_SECONDS):
        return await super().connect(timeout)

    async def receive_output(self, timeout: float = WAIT_SECONDS):
        return await super().receive_output(timeout)
