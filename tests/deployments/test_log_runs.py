"""The WebSocket's line format: runs of consecutive lines sharing step,
stream and time, and the trimming a consumer does on an overlap."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from deployments.logs import (
    NULL,
    Chunk,
    chunk_runs,
    copy_rows,
    copy_text,
    line_runs,
    lines_event,
    runs_after,
)

T1 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
T2 = datetime(2026, 12, 1, 9, 30, 1, tzinfo=UTC)


def expand(runs: list[dict]) -> list[tuple]:
    return [
        (run["seq"] + offset, run["step"], run["stream"], text, run["at"])
        for run in runs
        for offset, text in enumerate(run["texts"])
    ]


LINES = [
    (1, "Apply", "stdout", "a", T1),
    (2, "Apply", "stdout", "b", T1),
    (3, "Apply", "stderr", "c", T1),  # another stream
    (4, "Apply", "stderr", "d", T2),  # another time
    (5, "Bake", "stderr", "e", T2),  # another step
    (7, "Bake", "stderr", "g", T2),  # a hole in the seqs
]


def test_runs_break_on_step_stream_time_and_seq_and_expand_to_the_same_lines():
    runs = line_runs(LINES)
    assert [(run["seq"], run["texts"]) for run in runs] == [
        (1, ["a", "b"]), (3, ["c"]), (4, ["d"]), (5, ["e"]), (7, ["g"]),
    ]  # fmt: skip
    assert expand(runs) == [(seq, step, stream, text, at.isoformat())
                            for seq, step, stream, text, at in LINES]  # fmt: skip


def test_a_burst_of_one_chunk_is_one_run():
    runs = line_runs((n, "Print", "stdout", f"line {n}", T1) for n in range(1, 501))
    assert len(runs) == 1 and len(runs[0]["texts"]) == 500
    event = lines_event(7, runs)
    assert (event["deployment"], event["first"], event["last"]) == (7, 1, 500)
    assert json.loads(event["frame"]) == {"type": "runs", "runs": runs}


def test_runs_after_keeps_only_later_lines():
    runs = line_runs(LINES)
    assert [line[0] for line in expand(runs_after(runs, 1))] == [2, 3, 4, 5, 7]
    assert [line[0] for line in expand(runs_after(runs, 4))] == [5, 7]
    assert runs_after(runs, 7) == []
    assert runs_after(runs, 0) == runs


def test_copy_rows_escape_and_order_every_line_whatever_its_chunk():
    """COPY's text format, built a chunk at a time, is the line-by-line one:
    chunks of other steps, streams and times, braces and backslashes kept,
    and a text holding a newline after all still escaped right."""
    stamps = {T1: T1.isoformat(), T2: T2.isoformat()}
    batch = [
        Chunk(1, 7, "Apply", "stdout", ["a\ttab {x} \\N", "cr\rinside"], T1),
        Chunk(3, None, "", "system", ["naïve – 漢字"], T1),
        Chunk(4, 7, "Apply", "stderr", ["two\nlines", ""], T2),
    ]
    lines = [
        (seq + offset, step, stream, text, at)
        for seq, step, _, stream, texts, at in batch
        for offset, text in enumerate(texts)
    ]
    expected = "".join(
        f"9\t{seq}\t{NULL if step is None else step}\t{stream}\t{copy_text(text)}\t{stamps[at]}\n"
        for seq, step, stream, text, at in lines
    )
    assert [line[0] for line in lines] == [1, 2, 3, 4, 5]
    assert copy_rows(9, batch) == expected


def test_chunks_of_one_step_stream_and_time_make_one_run_and_keep_their_lines():
    batch = [
        Chunk(1, 7, "Apply", "stdout", ["a", "b"], T1),
        Chunk(3, 7, "Apply", "stdout", ["c"], T1),  # joins the run before
        Chunk(4, 7, "Apply", "stderr", ["d"], T1),  # another stream
        Chunk(5, 7, "Apply", "stderr", ["e"], T2),  # another time
        Chunk(7, 7, "Apply", "stderr", ["g"], T2),  # a hole in the seqs
    ]
    runs = chunk_runs(batch)
    assert [(run["seq"], run["texts"]) for run in runs] == [
        (1, ["a", "b", "c"]), (4, ["d"]), (5, ["e"]), (7, ["g"]),
    ]  # fmt: skip
    assert batch[0].texts == ["a", "b"]  # the storer's chunk is left as it was
    assert runs == line_runs(
        (seq + offset, step, stream, text, at)
        for seq, _, step, stream, texts, at in batch
        for offset, text in enumerate(texts)
    )
