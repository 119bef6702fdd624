"""Tell open dashboards that an environment changed.

Each dashboard socket joins one group per environment it may see; anything
that changes what a card shows (a deployment's status or step, an alarm
transition, new cost figures) calls `environment_changed` after its
transaction commits, and the dashboard re-fetches that one card.

Broadcasts go through the "broadcast" channel layer (Redis pub/sub: one
PUBLISH per change however many dashboards watch). They carry no data, only
which card to re-fetch, so a lost one costs a stale card until the next
change or the page's poll; never a wrong one.

Each environment also has a card version in the cache, under which its
built card is kept (portal/card_cache.py). After commit, a change first gives
the card a new random version, so a card built from older data is never read
again; then, in a background thread (off the path of whoever committed),
builds the card once, so the dashboards it tells re-fetch a kept card (a
thousand of them would otherwise all build it at once), and broadcasts.
Changes made outside the engine (the admin, the ORM) come here too, from the
receivers in environments/signals.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, transaction
from django.utils.module_loading import import_string

from portal.core.redis_clients import redis_client

log = logging.getLogger(__name__)

LAYER = "broadcast"
VERSION_KEY = "card-version:{}"


def touch(environment_ids: Iterable[int]) -> None:
    """Give the environments' cards new versions (now: call it after commit)."""
    fresh = {VERSION_KEY.format(pk): uuid4().hex for pk in environment_ids}
    if fresh:
        # No expiry: a version that vanished would be replaced by a new one
        # (card_versions), so expiry could only cost rebuilds.
        cache.set_many(fresh, timeout=None)


def card_versions(environment_ids: Iterable[int]) -> dict[int, str]:
    """{environment id: its card version}; environments without one get one.

    Read before the data a card is built from: a change committed after that
    read gives a new version, so a card built from older data is stored under
    a version nobody asks for again.
    """
    keys = {VERSION_KEY.format(pk): pk for pk in environment_ids}
    found = cache.get_many(keys)
    missing = {key: uuid4().hex for key in keys if key not in found}
    if missing:
        # Random, never reused: a card stored under an earlier value of this
        # key (before it was evicted) cannot be mistaken for this version.
        cache.set_many(missing, timeout=None)
        found.update(missing)
    return {keys[key]: version for key, version in found.items()}


def environment_group(environment_id: int) -> str:
    return f"environment-{environment_id}"


def _broadcast(environment_id: int, what: str) -> None:
    message = {"type": "environment.changed", "environment": environment_id, "what": what}
    publish(environment_group(environment_id), message)


def publish(group: str, message: dict) -> None:
    """group_send to the broadcast layer from sync code (dashboards here, log
    lines in deployments/logs.py).

    With the pub/sub layer on one host this is what its group_send does, one
    PUBLISH, without an event loop: async_to_sync made a loop and a Redis
    connection per call, and now and then took 300 ms over it
    (docs/PERFORMANCE.md, "Fan-out"). Other layers get their own group_send.
    """
    layer = get_channel_layer(LAYER)
    publisher = _publisher()
    if publisher is None:
        async_to_sync(layer.group_send)(group, message)
        return
    client, prefix = publisher
    client.publish(f"{prefix}__group__{group}", layer.serialize(message))


def _publisher() -> tuple[redis.Redis, str] | None:
    """A Redis client and the channel prefix to publish to the broadcast
    layer's groups with; None unless it is the pub/sub layer on one host."""
    layer = settings.CHANNEL_LAYERS.get(LAYER, {})
    hosts = layer.get("CONFIG", {}).get("hosts", [])
    if layer.get("BACKEND") != "channels_redis.pubsub.RedisPubSubChannelLayer" or len(hosts) != 1:
        return None
    address = hosts[0]["address"] if isinstance(hosts[0], dict) else hosts[0]
    return redis_client(address), layer["CONFIG"].get("prefix", "asgi")


def environment_changed(environment_id: int, what: str) -> None:
    """Rebuild the card and broadcast once the current transaction commits
    (at once outside one).

    Several changes of one environment in one transaction make one update,
    run after the other commit callbacks registered so far (a deployment's
    job is enqueued before its card is built). A failed update is logged,
    never raised: the change itself is committed and a dashboard refresh
    must not turn it into an error for the user.
    """
    connection = transaction.get_connection()
    # Django drops the callbacks of a rolled-back (savepoint) block from this
    # list, so an update found here is one that will really run. It is
    # replaced by one at the end, under the same savepoints.
    for sids, callback, robust in connection.run_on_commit:
        if getattr(callback, "environment_id", None) == environment_id and callback.wanted:
            callback.wanted = False
            connection.run_on_commit.append((sids, _update(environment_id, what), robust))
            return
    transaction.on_commit(_update(environment_id, what))


def _update(environment_id: int, what: str):
    def update() -> None:
        if update.wanted:
            _send(environment_id, what)

    update.environment_id = environment_id
    update.wanted = True
    return update


def _send(environment_id: int, what: str) -> None:
    try:
        touch([environment_id])  # at once: from now on no card kept before is served
    except Exception:  # noqa: BLE001 - see environment_changed
        log.warning("card version of environment %s not updated", environment_id, exc_info=True)
    _updates().submit(_update_card, environment_id, what)


def _update_card(environment_id: int, what: str) -> None:
    """Build the card, keep it, then tell the dashboards (which re-fetch it).

    The builder is named in settings (DASHBOARD_CARD_BUILDER): cards are the
    dashboard's, which sits above the catalog and tells it how to build one.
    """
    close_old_connections()
    try:
        import_string(settings.DASHBOARD_CARD_BUILDER)(environment_id)
        _broadcast(environment_id, what)
    except Exception:  # noqa: BLE001 - see environment_changed
        log.warning("dashboard update for environment %s failed", environment_id, exc_info=True)
    finally:
        close_old_connections()


_executor: tuple[int, ThreadPoolExecutor] | None = None


def _updates() -> ThreadPoolExecutor:
    """One thread per process builds cards and broadcasts, in commit order:
    off the path of whoever committed (a worker about to run a step, a
    request about to answer)."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():  # none yet, or inherited by a fork
        _executor = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="dashboard-cards"))
    return _executor[1]


def flush(timeout: float = 10) -> None:
    """Wait until the card updates queued so far are done."""
    _updates().submit(lambda: None).result(timeout)
