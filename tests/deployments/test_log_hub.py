"""The process's log hub (deployments/log_hub.py): one channel for every
viewer of every deployment; a batch written by the hub to each viewer in step
with it, anything else through the viewer's own queue, in order.

The state machine drives the real hub and the real consumer logic
(follow, queue, log_lines, catch_up) over sockets that can fill up, with the
database read replaced by an in-memory store the storer can lag behind; the
end-to-end tests use real Redis and channels' communicator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from deployments import consumers, logs
from deployments.consumers import DeploymentLogConsumer
from deployments.log_hub import LogHub, log_hub
from deployments.logs import LogWriter, line_runs, lines_event
from deployments.models import Deployment
from environments import live
from tests.conftest import env
from tests.deployments.test_log_stream import receive_lines, watching, write_async
from tests.sockets import WAIT_SECONDS

DEPLOYMENT = 4242
AT = timezone.now()


def batch(first: int, last: int, deployment: int = DEPLOYMENT) -> dict:
    runs = line_runs((n, "Print", "stdout", f"line {n}", AT) for n in range(first, last + 1))
    return lines_event(deployment, runs)


def status(deployment: int = DEPLOYMENT) -> dict:
    return {"type": "deployment.status", "deployment": deployment, "status": "running"}


class Socket:
    """A viewer's ASGI send as uvicorn's behaves: with its buffer full
    (`blocked`), a send waits before writing anything."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.frames: list[dict] = []

    async def send(self, message: dict) -> None:
        await self.writable.wait()
        if message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))

    def seqs(self) -> list[int]:
        return [
            run["seq"] + offset
            for frame in self.frames
            if frame["type"] == "runs"
            for run in frame["runs"]
            for offset in range(len(run["texts"]))
        ]


class LocalHub(LogHub):
    """The hub without its channel: the tests hand it messages themselves."""

    async def join(self, consumer, keys) -> None:
        for key in keys:
            self.watchers.setdefault(key, set()).add(consumer)


def viewer(socket: Socket) -> DeploymentLogConsumer:
    consumer = DeploymentLogConsumer()
    consumer.deployment_id = DEPLOYMENT
    consumer.base_send = socket.send
    return consumer


async def connected() -> tuple[Socket, DeploymentLogConsumer]:
    """A viewer with nothing yet, its backlog (whatever is stored) sent."""
    socket = Socket()
    each = viewer(socket)
    await each.follow(0)
    return socket, each


def reading(lines: list[int], open_: asyncio.Event | None = None):
    """The consumer's database read over `lines`, the seqs stored so far;
    with `open_`, a read waits until it is set (a stalled database)."""

    async def lines_after(deployment_id, after):
        if open_ is not None:
            await open_.wait()
        rows = [(n, "Print", "stdout", f"line {n}", AT) for n in lines if n > after]
        return rows[: consumers.BACKLOG_CHUNK], "running"

    return lines_after


@pytest.fixture
def stored(monkeypatch):
    """The database as the consumer reads it: the seqs stored so far."""
    lines: list[int] = []
    monkeypatch.setattr(consumers, "_lines_after", reading(lines))
    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 0)  # the store does not move meanwhile
    return lines


def run_hub(scenario) -> None:
    """Run `scenario(hub)` with a LocalHub as the process's log hub."""

    async def main():
        hub = LocalHub()
        original = consumers.log_hub
        consumers.log_hub = lambda: hub
        try:
            await scenario(hub)
        finally:
            consumers.log_hub = original

    asyncio.run(main())


def test_a_batch_in_step_is_written_by_the_hub_itself(stored):
    async def scenario(hub):
        sockets, viewers = zip(await connected(), await connected(), strict=True)
        await hub.deliver(batch(1, 500))
        # Written during deliver: no task, no queue.
        assert [socket.seqs() for socket in sockets] == [list(range(1, 501))] * 2
        assert all(not each.busy and not each.inbox and each.working is None for each in viewers)
        await hub.deliver(batch(1, 500))  # again (a duplicate): nothing new
        await hub.deliver(batch(3, 9, deployment=DEPLOYMENT + 1))  # another deployment's
        assert [socket.seqs() for socket in sockets] == [list(range(1, 501))] * 2

    run_hub(scenario)


def test_a_full_socket_waits_alone_and_gets_everything_in_order(stored):
    async def scenario(hub):
        (slow, slow_viewer), (fast, _) = await connected(), await connected()
        slow.writable.clear()
        for first in (1, 11, 21):
            await hub.deliver(batch(first, first + 9))
        # The fast one has all three; the slow one nothing yet, and no batch overtook another.
        assert fast.seqs() == list(range(1, 31)) and slow.seqs() == []
        assert slow_viewer.busy
        slow.writable.set()
        await asyncio.wait_for(slow_viewer.working, 1)
        assert slow.seqs() == list(range(1, 31))
        assert not slow_viewer.busy
        await hub.deliver(batch(31, 40))  # in step again: the hub writes it
        assert slow.seqs() == fast.seqs() == list(range(1, 41))

    run_hub(scenario)


def test_a_gap_goes_to_the_database_and_then_the_hub_writes_again(stored):
    async def scenario(hub):
        socket, each = await connected()
        stored.extend(range(1, 21))  # 1-20 stored; their batch never came
        await hub.deliver(batch(21, 30))
        await asyncio.wait_for(each.working, 1)
        assert socket.seqs() == list(range(1, 31))
        await hub.deliver(batch(31, 35))
        assert socket.seqs() == list(range(1, 36))

    run_hub(scenario)


def test_what_comes_during_the_backlog_follows_it(stored):
    """A viewer still sending its backlog (a slow socket) when live batches
    arrive gets them after it, each line once."""
    stored.extend(range(1, 101))

    async def scenario(hub):
        socket = Socket()
        socket.writable.clear()
        each = viewer(socket)
        following = asyncio.create_task(each.follow(0))
        await asyncio.sleep(0.01)
        await hub.deliver(batch(91, 110))  # overlaps the backlog
        await hub.deliver(batch(111, 120))
        socket.writable.set()
        await asyncio.wait_for(following, 1)
        assert socket.seqs() == list(range(1, 121))
        assert not each.busy

    run_hub(scenario)


@pytest.mark.parametrize("what", ["the backlog", "after a status"])
def test_a_batch_in_step_waits_while_the_viewer_reads_the_database(stored, monkeypatch, what):
    """The hub does not write to a viewer that is reading the database (its
    backlog on connect, or again after a status), even a batch that follows
    on from what it has: the read may return those lines too."""
    answer = asyncio.Event()

    async def scenario(hub):
        socket = Socket()
        each = viewer(socket)
        if what == "after a status":
            await each.follow(0)
        monkeypatch.setattr(consumers, "_lines_after", reading(stored, answer))
        if what == "the backlog":
            reading_task = asyncio.create_task(each.follow(0))
        else:
            await hub.deliver(status())
            reading_task = each.working
        await asyncio.sleep(0.01)  # the read is under way
        stored.extend(range(1, 6))
        await hub.deliver(batch(1, 5))
        answer.set()
        await asyncio.wait_for(reading_task, 1)
        assert socket.seqs() == [1, 2, 3, 4, 5]

    run_hub(scenario)


def test_a_viewer_whose_socket_failed_is_no_longer_queued_for(stored):
    async def scenario(hub):
        _, each = await connected()

        async def broken(message):
            raise OSError("the client went away")

        each.base_send = broken
        await hub.deliver(status())
        await asyncio.wait_for(each.working, 1)
        assert each.gone and not each.inbox
        await hub.deliver(status())
        assert not each.inbox

    run_hub(scenario)


# -- sequences ---------------------------------------------------------------


class Viewers(RuleBasedStateMachine):
    """Batches, lost batches, a storer behind, statuses, viewers joining at
    any seq, sockets filling up and draining, viewers leaving. Always: every
    viewer has received a gap-free run of lines from where it started, each
    once, in order. At the end, once everything is stored and a status has
    gone out: every viewer still there has every line."""

    opened = Bundle("viewers")

    @initialize()
    def start(self):
        self.loop = asyncio.new_event_loop()
        self.hub = LocalHub()
        self.original = consumers.log_hub
        consumers.log_hub = lambda: self.hub
        self.stored: list[int] = []
        self.original_read = consumers._lines_after

        # The database answers when open; stalled, a viewer's read waits
        # (with the hub delivering meanwhile), as a query in a thread does.
        self.database = asyncio.Event()
        self.database.set()

        consumers._lines_after = reading(self.stored, self.database)
        self.gap_wait = consumers.GAP_WAIT_SECONDS
        consumers.GAP_WAIT_SECONDS = 0
        self.written = 0  # lines the writer has numbered (and sent, or lost)
        self.viewers: list[tuple[DeploymentLogConsumer, Socket, int]] = []

    def teardown(self):
        if not hasattr(self, "loop"):
            return
        consumers.log_hub = self.original
        consumers._lines_after = self.original_read
        consumers.GAP_WAIT_SECONDS = self.gap_wait
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending))
        self.loop.close()

    def settle(self) -> None:
        """Let every viewer work through what it can (a full socket waits)."""
        self.loop.run_until_complete(asyncio.sleep(0))
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0.001))

    @rule(target=opened, after=st.integers(0, 60), full=st.booleans())
    def connect(self, after, full):
        socket = Socket()
        if full:
            socket.writable.clear()
        each = viewer(socket)
        after = min(after, len(self.stored))
        self.loop.create_task(each.follow(after))
        self.settle()
        self.viewers.append((each, socket, after))
        return len(self.viewers) - 1

    @rule(size=st.integers(1, 15), lost=st.booleans(), stored=st.booleans())
    def write(self, size, lost, stored):
        first, self.written = self.written + 1, self.written + size
        if stored:  # the storer keeps up (it always writes in order)
            self.store()
        if not lost:
            self.loop.run_until_complete(self.hub.deliver(batch(first, self.written)))
        self.settle()

    @rule()
    def store(self):
        self.stored.extend(range(len(self.stored) + 1, self.written + 1))

    @rule()
    def status(self):
        self.loop.run_until_complete(self.hub.deliver(status()))
        self.settle()

    @rule(index=opened)
    def fill_up(self, index):
        self.viewers[index][1].writable.clear()

    @rule(index=opened)
    def drain(self, index):
        self.viewers[index][1].writable.set()
        self.settle()

    @rule()
    def stall_database(self):
        self.database.clear()

    @rule()
    def resume_database(self):
        self.database.set()
        self.settle()

    @rule(index=consumes(opened))
    def leave(self, index):
        each, socket, _ = self.viewers[index]
        socket.writable.set()
        self.loop.run_until_complete(each.disconnect(1000))
        self.settle()

    @invariant()
    def in_order_without_gaps(self):
        for _, socket, after in self.viewers:
            seqs = socket.seqs()
            assert seqs == list(range(after + 1, after + 1 + len(seqs)))

    @rule()
    def everything_arrives(self):
        self.database.set()
        self.store()
        for _, socket, _ in self.viewers:
            socket.writable.set()
        self.settle()
        self.status()
        self.settle()
        for each, socket, after in self.viewers:
            if not each.gone:
                assert socket.seqs() == list(range(after + 1, self.written + 1))
                assert not each.busy


TestViewers = Viewers.TestCase
TestViewers.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


# -- end to end: Redis, the hub's channel, channels' communicator ------------


@pytest.mark.django_db(transaction=True)
def test_two_viewers_in_one_process_get_every_line_once(release, users, catalog):
    deployment = Deployment.request(release, env(catalog, "dev"), users["alice"], "hub")
    writer = LogWriter(deployment.pk)

    async def scenario():
        dave = await watching(users["dave"], deployment)
        bob = await watching(users["bob"], deployment)
        # Both are in the one channel of the process's hub, which is in the group once.
        assert len(log_hub().watchers[deployment.pk]) == 2
        await write_async(writer, 1, 1200)
        seqs = [await receive_lines(viewer, 1200) for viewer in (dave, bob)]
        await dave.disconnect()
        await bob.disconnect()
        assert log_hub().watchers == {} and log_hub().joined == set()
        return seqs

    try:
        seqs = async_to_sync(scenario)()
    finally:
        writer.close()
    assert seqs == [list(range(1, 1201))] * 2


@pytest.mark.django_db(transaction=True)
def test_the_group_is_left_once_no_one_in_the_process_watches(release, users, catalog):
    deployment = Deployment.request(release, env(catalog, "dev"), users["alice"], "hub")
    client, prefix = live._publisher()
    group = f"{prefix}__group__{logs.group_name(deployment.pk)}"  # as live.publish() sends

    async def scenario():
        dave = await watching(users["dave"], deployment)
        bob = await watching(users["bob"], deployment)
        await dave.disconnect()
        assert client.pubsub_numsub(group)[0][1] == 1  # bob still watches
        await bob.disconnect()

    async_to_sync(scenario)()
    deadline = time.monotonic() + WAIT_SECONDS
    while client.pubsub_numsub(group)[0][1] != 0:  # Redis acts on UNSUBSCRIBE a little later
        assert time.monotonic() < deadline, "the process still listens to the group"
        time.sleep(0.01)
