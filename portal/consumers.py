"""Dashboard sockets: tell an open dashboard which of its cards changed.

The socket joins one group per environment the user may see, decided once at
connect time (a role granted later shows after a reload). Messages carry only
the environment id; the page re-fetches that card over HTTP, where the role is
checked again, so nothing the user may not see ever travels on the socket.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from environments.live import LAYER, environment_group


@database_sync_to_async
def _visible_environment_ids(user) -> list[int]:
    from portal.roles import visible_environments

    if not user.is_authenticated or not user.is_active:
        return []
    return list(visible_environments(user).values_list("pk", flat=True))


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = LAYER

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # As the log socket: accepted, then closed with 4403 and nothing sent.
            await self.accept()
            await self.close(code=4403)
            return
        self.groups_joined = [environment_group(pk) for pk in await _visible_environment_ids(user)]
        # At once, not one Redis round trip after another.
        join = self.channel_layer.group_add
        await asyncio.gather(*(join(group, self.channel_name) for group in self.groups_joined))
        await self.accept()

    async def disconnect(self, code) -> None:
        await asyncio.gather(
            *(
                self.channel_layer.group_discard(group, self.channel_name)
                for group in getattr(self, "groups_joined", [])
            )
        )

    async def dispatch(self, message: dict) -> None:
        # Channels runs close_old_connections in the sync thread before every
        # handler: with a thousand dashboards, a thousand hops through one
        # thread per change. This handler uses no database.
        if message["type"] == "environment.changed":
            await self.environment_changed(message)
            return
        await super().dispatch(message)

    async def environment_changed(self, event: dict) -> None:
        await self.send_json({"type": "changed", "environment": event["environment"],
                              "what": event.get("what", "")})  # fmt: skip

    async def receive_json(self, content, **kwargs) -> None:
        """Dashboards only listen; anything they send is ignored."""
