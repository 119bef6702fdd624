"""LogWriter's batches under random sequences of reads, step changes,
flushes and pauses: with limits small enough that chunks are cut across
frames and COPYs all the time, every line reaches the viewers' frames and
the database once, in order, with its step, stream and time, and no frame
or COPY exceeds its limit. Real PostgreSQL; the channel layer is replaced by
a list (what is checked is what the writer hands it)."""

from __future__ import annotations

import json
import time

import pytest
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from deployments import logs
from deployments.choices import StepStatus
from deployments.logs import LogWriter
from deployments.models import Deployment, LogLine, StepRun
from tests.conftest import env
from tests.strategies import run_machine

pytestmark = pytest.mark.django_db(transaction=True)

# Lines of 10 to 90 bytes as frames count them: either limit may cut a batch.
MAX_BATCH, MAX_FRAME_BYTES, LINE_OVERHEAD, STORE_BATCH = 7, 300, 10, 10


class WriterSequences(RuleBasedStateMachine):
    world: dict = {}  # set by the test: the deployment, its steps, the sent events, the COPYs
    text = st.one_of(  # short lines, and long ones that fill a frame in a few
        st.text(alphabet="ab \t\\é漢", max_size=8),
        st.text(alphabet="ab \t\\é漢", min_size=40, max_size=80),
    )

    def __init__(self) -> None:
        super().__init__()
        deployment = self.world["deployment"]
        LogLine.objects.filter(deployment=deployment).delete()
        self.world["sent"].clear()
        self.world["stored"].clear()
        self.writer = LogWriter(deployment.pk)
        self.step = (None, "")
        self.expected: list[tuple] = []  # (seq, step_id, step name, stream, text)
        self.closed = False

    @rule(
        texts=st.lists(text, min_size=1, max_size=12), stream=st.sampled_from(["stdout", "stderr"])
    )
    def read(self, texts, stream):
        first = len(self.expected) + 1
        self.writer.write_lines(list(texts), stream)
        self.expected += [
            (first + offset, *self.step, stream, text) for offset, text in enumerate(texts)
        ]

    @rule(which=st.integers(0, 2))
    def set_step(self, which):
        self.step = self.world["steps"][which]
        self.writer.set_step(*self.step)

    @rule()
    def flush(self):
        self.writer.flush()
        assert self.stored_lines() == self.expected

    @rule(ms=st.integers(1, 30))
    def pause(self, ms):  # the sender and storer catch up, or wait out MIN_FLUSH_GAP
        time.sleep(ms / 1000)

    @invariant()
    def frames_keep_their_limits_and_order(self):
        lines = self.sent_lines()  # so far: a prefix of what was read, in order
        assert [line[:4] for line in lines] == [
            (seq, name, stream, text) for seq, _, name, stream, text in self.expected[: len(lines)]
        ]
        for event in self.world["sent"]:
            texts = [text for run in json.loads(event["frame"])["runs"] for text in run["texts"]]
            assert 0 < len(texts) <= MAX_BATCH
            # Every line but the last fits under the limit: a frame holds up
            # to the line that reaches it.
            assert sum(len(t) + LINE_OVERHEAD for t in texts[:-1]) < MAX_FRAME_BYTES
            assert event["last"] - event["first"] + 1 == len(texts)

    def teardown(self):
        self.writer.close()
        assert self.stored_lines() == self.expected
        lines = self.sent_lines()
        assert [line[:4] for line in lines] == [
            (seq, name, stream, text) for seq, _, name, stream, text in self.expected
        ]
        # Each line is stored with the time its frame showed, times never go back.
        stored_at = list(LogLine.objects.filter(deployment=self.world["deployment"])
                         .order_by("seq").values_list("at", flat=True))  # fmt: skip
        assert [at.isoformat() for at in stored_at] == [line[4] for line in lines]
        assert stored_at == sorted(stored_at)
        # A COPY takes STORE_BATCH lines, or up to the end of the chunk that reaches it.
        assert all(0 < count < STORE_BATCH + MAX_BATCH for count in self.world["stored"])

    def sent_lines(self) -> list[tuple]:
        return [
            (run["seq"] + offset, run["step"], run["stream"], text, run["at"])
            for event in self.world["sent"]
            for run in json.loads(event["frame"])["runs"]
            for offset, text in enumerate(run["texts"])
        ]

    def stored_lines(self) -> list[tuple]:
        rows = LogLine.objects.filter(deployment=self.world["deployment"]).order_by("seq")
        names = {step_id: name for step_id, name in self.world["steps"]}
        return [
            (seq, step_id, names[step_id], stream, text)
            for seq, step_id, stream, text in rows.values_list("seq", "step_id", "stream", "text")
        ]


def test_batches_under_random_sequences(release, catalog, users, monkeypatch):
    deployment = Deployment.request(release, env(catalog, "dev"), users["alice"], "batches")
    steps = [(None, "")]
    for order, name in enumerate(["Plan", "Apply"], start=1):
        run = StepRun.objects.create(
            deployment=deployment, order=order, name=name, kind="command",
            status=StepStatus.RUNNING, started_at=timezone.now(),
        )  # fmt: skip
        steps.append((run.pk, name))
    sent, stored = [], []
    real_store = logs.store_lines

    def counted_store(deployment_id, batch):
        real_store(deployment_id, batch)
        stored.append(sum(len(chunk.texts) for chunk in batch))

    monkeypatch.setattr(LogWriter, "_send", lambda self, event: sent.append(event))
    monkeypatch.setattr(logs, "store_lines", counted_store)
    monkeypatch.setattr(logs, "MAX_BATCH", MAX_BATCH)
    monkeypatch.setattr(logs, "MAX_FRAME_BYTES", MAX_FRAME_BYTES)
    monkeypatch.setattr(logs, "LINE_OVERHEAD", LINE_OVERHEAD)
    monkeypatch.setattr(logs, "STORE_BATCH", STORE_BATCH)
    WriterSequences.world = {"deployment": deployment, "steps": steps, "sent": sent,
                             "stored": stored}  # fmt: skip
    run_machine(WriterSequences, examples=40, steps=25)
