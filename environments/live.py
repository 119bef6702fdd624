"""Tell open dashboards that an environment changed.

Each dashboard socket joins one group per environment it may see; anything
that changes what a card shows (a deployment's status or step, an alarm
transition, new cost figures) calls `environment_changed` after its
transaction commits, and the dashboard re-renders that one card.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def environment_group(environment_id: int) -> str:
    return f"environment-{environment_id}"


def environment_changed(environment_id: int, what: str) -> None:
    """Broadcast once the current transaction commits (at once outside one)."""

    def send() -> None:
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(
            environment_group(environment_id),
            {"type": "environment.changed", "environment": environment_id, "what": what},
        )

    transaction.on_commit(send)
