"""Listening to dashboard broadcasts in tests."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from environments import live
from environments.live import LAYER, environment_group
from tests.sockets import WAIT_SECONDS

# For live.flush(): it waits out every card update queued so far, each a few
# queries, which a loaded machine can take well past flush's default 10 s over.
FLUSH_SECONDS = 60


def wait_subscribed(*groups: str, timeout: float = WAIT_SECONDS) -> None:
    """Return once Redis has a subscriber to each of these broadcast groups.

    The pub/sub layer's group_add sends SUBSCRIBE without waiting for Redis to
    act on it, and a PUBLISH that Redis handles first reaches nobody (delivery
    is at most once). On a loaded machine that window is real: tests that
    publish right after a socket joins wait for this instead of sleeping.
    """
    publisher = live._publisher()
    if publisher is None or not groups:  # other layers have joined once group_add returns
        return
    client, prefix = publisher
    channels = [f"{prefix}__group__{group}" for group in groups]  # as live.publish() sends
    deadline = time.monotonic() + timeout
    while any(count == 0 for _, count in client.pubsub_numsub(*channels)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no subscriber to {channels} after {timeout} s")
        time.sleep(0.01)


async def subscribed(*groups: str, timeout: float = WAIT_SECONDS) -> None:
    """wait_subscribed() from async code."""
    await asyncio.to_thread(wait_subscribed, *groups, timeout=timeout)


async def broadcast_heard(environment_id: int, callbacks: list) -> dict:
    """Listen to the environment's group as a dashboard socket does (one event
    loop), run the transaction's on-commit callbacks, return what arrived."""
    layer = get_channel_layer(LAYER)
    channel = await layer.new_channel()
    await layer.group_add(environment_group(environment_id), channel)
    try:
        await subscribed(environment_group(environment_id))
        for callback in callbacks:
            await sync_to_async(callback, thread_sensitive=False)()
        return await asyncio.wait_for(layer.receive(channel), WAIT_SECONDS)
    finally:
        await layer.group_discard(environment_group(environment_id), channel)
