"""Live logs: LogWriter stores and broadcasts; the consumer delivers in order,
with no gap and no duplicate, to viewers with a role only. Real Redis channel
layer, channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.db import OperationalError
from django.utils import timezone

from deployments import consumers, logs
from deployments.logs import LogWriter
from deployments.models import Deployment, LogLine
from deployments.viewers import broadcast_status
from environments.live import publish
from portal.cloud.masking import Masker
from portal.routing import websocket_urlpatterns
from tests.conftest import env
from tests.live import subscribed
from tests.polling import wait_for
from tests.sockets import Communicator

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deployment(release, users, catalog):
    return Deployment.request(release, env(catalog, "dev"), users["alice"], "logs")


async def listening(deployment) -> None:
    # The consumer's group join is a SUBSCRIBE Redis acts on a little later:
    # lines published before it has it would reach no one.
    await subscribed(logs.group_name(deployment.pk))


def connect(user, deployment, after: int | None = None) -> Communicator:
    path = f"/ws/deployments/{deployment.pk}/logs/"
    if after is not None:
        path += f"?after={after}"
    communicator = Communicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    return communicator


async def watching(user, deployment) -> Communicator:
    """A viewer with no lines yet, connected, subscribed, its status received."""
    communicator = connect(user, deployment)
    assert (await communicator.connect())[0]
    await listening(deployment)
    assert (await communicator.receive_json_from())["type"] == "status"
    return communicator


async def receive_lines(communicator, until_seq: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < until_seq:
        message = await communicator.receive_json_from()
        if message["type"] == "runs":
            for run in message["runs"]:
                seqs.extend(range(run["seq"], run["seq"] + len(run["texts"])))
    return seqs


def write(writer: LogWriter, first: int, last: int) -> None:
    for n in range(first, last + 1):
        writer.write(f"line {n}")
    writer.flush()


def test_it_sends_the_backlog_then_live_lines_in_order(deployment, users):
    writer = LogWriter(deployment.pk)

    async def scenario():
        await write_async(writer, 1, 50)
        communicator = connect(users["dave"], deployment)
        connected, _ = await communicator.connect()
        assert connected
        await listening(deployment)
        backlog = await receive_lines(communicator, 50)
        await write_async(writer, 51, 120)
        live = await receive_lines(communicator, 120)
        await communicator.disconnect()
        return backlog + live

    try:
        seqs = async_to_sync(scenario)()
    finally:
        writer.close()
    assert seqs == list(range(1, 121))


def test_a_reconnecting_viewer_gets_exactly_what_it_missed(deployment, users):
    writer = LogWriter(deployment.pk)

    async def scenario():
        await write_async(writer, 1, 80)
        communicator = connect(users["bob"], deployment, after=60)
        connected, _ = await communicator.connect()
        assert connected
        await listening(deployment)
        seqs = await receive_lines(communicator, 80)
        await write_async(writer, 81, 90)
        seqs += await receive_lines(communicator, 90)
        await communicator.disconnect()
        return seqs

    try:
        seqs = async_to_sync(scenario)()
    finally:
        writer.close()
    assert seqs == list(range(61, 91))


def test_a_dropped_live_message_is_filled_from_the_database(deployment, users):
    writer = LogWriter(deployment.pk)

    async def scenario():
        communicator = await watching(users["dave"], deployment)
        # Lines 1-10 are stored but their broadcast is lost.
        await store_silently(deployment.pk, 1, 10)
        writer.next_seq = 11
        await write_async(writer, 11, 20)
        seqs = await receive_lines(communicator, 20)
        await communicator.disconnect()
        return seqs

    try:
        seqs = async_to_sync(scenario)()
    finally:
        writer.close()
    assert seqs == list(range(1, 21))


def test_it_refuses_users_without_a_role(deployment, users):
    async def scenario():
        communicator = connect(users["mallory"], deployment)
        await communicator.connect()
        return await communicator.receive_output()

    # Closed with 4403 before anything was sent.
    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4403}


def test_it_masks_secrets_before_storing(deployment):
    writer = LogWriter(deployment.pk, Masker({"db_password": "s3cr3t-pa55"}))
    writer.write("connecting with s3cr3t-pa55 and AKIAABCDEFGHIJKLMNOP")
    writer.close()
    text = LogLine.objects.get(deployment=deployment).text
    assert text == "connecting with **** and ****"


def test_a_full_batch_goes_at_once_and_a_part_one_waits_out_the_gap(deployment, monkeypatch):
    """The first line after a quiet spell goes at once; then at most one
    batch per MIN_FLUSH_GAP, unless MAX_BATCH lines wait: those go as soon as
    they are there, however they were read (here in reads of ten lines)."""
    sent = []
    monkeypatch.setattr(LogWriter, "_send", lambda self, event: sent.append(time.monotonic()))
    monkeypatch.setattr(logs, "MIN_FLUSH_GAP", 30.0)  # far longer than the test may take
    writer = LogWriter(deployment.pk)
    try:
        writer.write("first")
        assert wait_for(lambda: len(sent) == 1, timeout=10)
        for n in range(0, logs.MAX_BATCH - 10, 10):  # a batch all but full: it waits
            writer.write_lines([f"line {n + i}" for i in range(10)])
        time.sleep(0.5)
        assert len(sent) == 1
        writer.write_lines([f"line {n}" for n in range(10)])  # now full: it goes
        assert wait_for(lambda: len(sent) == 2, timeout=10)
    finally:
        writer.close()  # close() does not wait out the gap
    assert LogLine.objects.filter(deployment=deployment).count() == 1 + logs.MAX_BATCH


def test_lines_read_in_one_millisecond_share_one_time_that_never_goes_back(deployment, monkeypatch):
    """A line's time is the millisecond the engine read it. A tool printing
    flat out comes a line or two per read, so the reads of one millisecond
    must make one run in the viewers' frame (not a run, an isoformat and a
    COPY group per read), and times must follow the line numbers."""
    sent = []
    monkeypatch.setattr(LogWriter, "_send", lambda self, event: sent.append(event))
    started = timezone.now()
    with LogWriter(deployment.pk) as writer:
        for n in range(0, 3000, 2):  # a few milliseconds of two-line reads
            writer.write_lines([f"line {n}", f"line {n + 1}"])
    finished = timezone.now()

    times = list(LogLine.objects.filter(deployment=deployment).order_by("seq").values_list(
        "at", flat=True
    ))  # fmt: skip
    assert len(times) == 3000
    assert times == sorted(times)
    assert all(at.microsecond % 1000 == 0 for at in times)
    assert started - timedelta(milliseconds=1) < times[0] and times[-1] <= finished
    runs = [run for event in sent for run in json.loads(event["frame"])["runs"]]
    distinct = len(set(times))
    assert distinct < 1500  # reads did share a millisecond (1,500 reads in all)
    # One run per millisecond of a frame, none per read.
    assert len(runs) <= distinct + len(sent)
    assert [run["seq"] for run in runs] == sorted(run["seq"] for run in runs)


# -- helpers running sync DB code from the async scenarios ------------------


@database_sync_to_async
def write_async(writer: LogWriter, first: int, last: int) -> None:
    write(writer, first, last)


@database_sync_to_async
def store_silently(deployment_id: int, first: int, last: int) -> None:
    LogLine.objects.bulk_create(
        LogLine(deployment_id=deployment_id, seq=n, text=f"line {n}")
        for n in range(first, last + 1)
    )


def test_viewers_get_the_text_that_is_stored(deployment, monkeypatch):
    """NUL is dropped before the line is sent, not only by COPY: what a
    viewer saw live is what a reload (or SQLite in the demo) shows."""
    sent = []
    monkeypatch.setattr(LogWriter, "_send", lambda self, event: sent.append(event))
    with LogWriter(deployment.pk) as writer:
        writer.write_lines(["nul\0gone", "plain"])
    runs = json.loads(sent[0]["frame"])["runs"]
    stored = list(LogLine.objects.filter(deployment=deployment).order_by("seq").values_list(
        "text", flat=True
    ))  # fmt: skip
    assert runs[0]["texts"] == stored == ["nulgone", "plain"]


def test_it_stores_lines_exactly_as_printed_whatever_they_hold(deployment):
    """Batches are stored with COPY's text format: tabs, backslashes, carriage
    returns and non-ASCII text must come back unchanged (NUL, which PostgreSQL
    text cannot hold, is dropped rather than losing the batch)."""
    lines = ["a\ttab", r"C:\path\to\thing \N \\", "cr\rinside", "naïve – 漢字 🚀", "nul\0gone", ""]
    writer = LogWriter(deployment.pk)
    writer.write_lines(lines)
    writer.close()

    stored = list(LogLine.objects.filter(deployment=deployment).order_by("seq").values_list(
        "seq", "text"
    ))  # fmt: skip
    assert stored == [
        (1, "a\ttab"), (2, r"C:\path\to\thing \N \\"), (3, "cr\rinside"),
        (4, "naïve – 漢字 🚀"), (5, "nulgone"), (6, ""),
    ]  # fmt: skip


# -- sent before stored: the consumer waits for the storer ------------------


def test_a_gap_the_storer_has_not_written_yet_is_waited_for(deployment, users, monkeypatch):
    """A viewer sees a batch (11-20) whose predecessors (1-10) were sent
    before it connected and are stored only 100 ms later: it gets 1-20, in
    order, once the storer catches up."""
    # However long a loaded machine takes to store them, the viewer waits.
    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 30)

    async def scenario():
        communicator = await watching(users["dave"], deployment)
        await send_batch(deployment.pk, 11, 20)
        await asyncio.sleep(0.1)
        await store_silently(deployment.pk, 1, 10)
        seqs = await receive_lines(communicator, 20)
        await communicator.disconnect()
        return seqs

    assert async_to_sync(scenario)() == list(range(1, 21))


def test_a_gap_never_stored_is_not_skipped(deployment, users, monkeypatch):
    """The storer is far behind (longer than GAP_WAIT_SECONDS): the batch is
    held back rather than sent past the gap, and the status that follows
    fills everything in order."""
    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 0.05)

    async def scenario():
        communicator = await watching(users["dave"], deployment)
        await send_batch(deployment.pk, 11, 20)
        status = await communicator.receive_json_from()
        assert status["type"] == "status"  # the wait ended: no lines past the gap
        await store_silently(deployment.pk, 1, 20)
        await database_sync_to_async(broadcast_status)(deployment.pk, "running")
        seqs = await receive_lines(communicator, 20)
        await communicator.disconnect()
        return seqs

    assert async_to_sync(scenario)() == list(range(1, 21))


def test_the_writer_sends_without_waiting_for_the_database(deployment, users, monkeypatch):
    """With the storer stuck, a viewer still gets the lines live; they are
    all stored, in order, once the database answers again."""
    stuck, real_store = threading.Event(), logs.store_lines

    def slow_store(*args):
        stuck.wait(timeout=60)  # set at the end; the timeout only keeps a failure from hanging
        real_store(*args)

    monkeypatch.setattr(logs, "store_lines", slow_store)
    writer = LogWriter(deployment.pk)

    async def scenario():
        communicator = await watching(users["dave"], deployment)
        for n in range(1, 31):
            writer.write(f"line {n}")
        seqs = await receive_lines(communicator, 30)
        stored = await database_sync_to_async(LogLine.objects.filter(deployment=deployment).count)()
        await communicator.disconnect()
        return seqs, stored

    try:
        seqs, stored_while_stuck = async_to_sync(scenario)()
    finally:
        stuck.set()
        writer.close()
    assert seqs == list(range(1, 31))
    assert stored_while_stuck == 0
    assert list(
        LogLine.objects.filter(deployment=deployment).order_by("seq").values_list("seq", flat=True)
    ) == list(range(1, 31))


def test_a_failed_store_is_retried_from_the_same_line(deployment, monkeypatch):
    """The database refuses a batch once: nothing is skipped, nothing stored
    twice, and what is stored is always 1..N with no hole."""
    real_store, failures = logs.store_lines, []

    def flaky_store(deployment_id, batch):
        if not failures:
            failures.append(batch[0].seq)
            raise OperationalError("the database went away")
        real_store(deployment_id, batch)

    monkeypatch.setattr(logs, "store_lines", flaky_store)
    monkeypatch.setattr(logs, "STORE_RETRY_SECONDS", 0.01)
    with LogWriter(deployment.pk) as writer:
        for n in range(1, 1201):
            writer.write(f"line {n}")
    assert failures == [1]
    assert list(
        LogLine.objects.filter(deployment=deployment).order_by("seq").values_list("seq", flat=True)
    ) == list(range(1, 1201))
    assert not writer._sender.is_alive() and not writer._storer.is_alive()


@database_sync_to_async
def send_batch(deployment_id: int, first: int, last: int) -> None:
    """Publish lines as the writer's sender does, without storing them."""
    now = timezone.now()
    runs = logs.line_runs((n, "", "stdout", f"line {n}", now) for n in range(first, last + 1))
    publish(logs.group_name(deployment_id), logs.lines_event(deployment_id, runs))
