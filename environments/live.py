"""Tell open dashboards that an environment changed.

Each dashboard socket joins one group per environment it may see; anything
that changes what a card shows (a deployment's status or step, an alarm
transition, new cost figures) calls `environment_changed` after its
transaction commits, and the dashboard re-fetches that one card.

Broadcasts go through the "broadcast" channel layer (Redis pub/sub: one
PUBLISH per change however many dashboards watch). They carry no data, only
which card to re-fetch, so a lost one costs a stale card until the next
change or the page's poll; never a wrong one.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

LAYER = "broadcast"


def environment_group(environment_id: int) -> str:
    return f"environment-{environment_id}"


def _broadcast(environment_id: int, what: str) -> None:
    layer = get_channel_layer(LAYER)
    async_to_sync(layer.group_send)(
        environment_group(environment_id),
        {"type": "environment.changed", "environment": environment_id, "what": what},
    )


def environment_changed(environment_id: int, what: str) -> None:
    """Broadcast once the current transaction commits (at once outside one).

    Several changes of one environment in one transaction send one message.
    A broken broadcast is logged, never raised: the change itself is committed
    and a dashboard refresh must not turn it into an error for the user.
    """
    connection = transaction.get_connection()
    # Django drops the callbacks of a rolled-back (savepoint) block from this
    # list, so a duplicate found here is one that will really be sent.
    for _, callback, *_ in connection.run_on_commit:
        if getattr(callback, "environment_id", None) == environment_id:
            return

    def send() -> None:
        _send(environment_id, what)

    send.environment_id = environment_id
    transaction.on_commit(send)


def _send(environment_id: int, what: str) -> None:
    try:
        _broadcast(environment_id, what)
    except Exception:  # noqa: BLE001 - see environment_changed
        log.warning("dashboard broadcast for environment %s failed", environment_id, exc_info=True)
