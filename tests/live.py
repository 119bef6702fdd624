"""Listening to dashboard broadcasts in tests."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from environments.live import LAYER, environment_group


async def broadcast_heard(environment_id: int, callbacks: list) -> dict:
    """Listen to the environment's group as a dashboard socket does (one event
    loop), run the transaction's on-commit callbacks, return what arrived."""
    layer = get_channel_layer(LAYER)
    channel = await layer.new_channel()
    await layer.group_add(environment_group(environment_id), channel)
    try:
        for callback in callbacks:
            await sync_to_async(callback, thread_sensitive=False)()
        return await asyncio.wait_for(layer.receive(channel), 5)
    finally:
        await layer.group_discard(environment_group(environment_id), channel)
