"""Dashboard sockets: tell an open dashboard which of its cards changed.

The socket hears of the environments the user may see, decided once at
connect time (a role granted later shows after a reload), through the
process's hub (portal/dashboard_hub.py). Messages carry only
the environment id; the page re-fetches that card over HTTP, where the role is
checked again, so nothing the user may not see ever travels on the socket.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.core.roles import visible_environment_ids
from portal.dashboard_hub import hub


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: the process's hub (portal/dashboard_hub.py)
    # receives for every dashboard and writes to this socket directly.
    channel_layer_alias = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # As the log socket: accepted, then closed with 4403 and nothing sent.
            await self.accept()
            await self.close(code=4403)
            return
        await hub().join(self, await database_sync_to_async(visible_environment_ids)(user))
        await self.accept()
        hub().watch(self)  # only now: nothing is sent before the accept

    async def disconnect(self, code) -> None:
        await hub().forget(self)

    async def receive_json(self, content, **kwargs) -> None:
        """Dashboards only listen; anything they send is ignored."""
