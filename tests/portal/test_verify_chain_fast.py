"""The fast and the parallel verification against the reference walk.

verify_chain(rows=iter_chain()) rebuilds every signed content with canonical()
from ORM rows: it is the reference. Without rows, PostgreSQL rows arrive
pre-formatted and the bytes are assembled without canonical(); with workers,
seq ranges are verified in separate processes and joined. Both must accept
exactly what canonical() signed and report the same first broken event.

Worker processes open their own connections, so they only see committed rows:
the tests that run them are transactional (the tables are flushed afterwards).
"""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection
from django.db.models import Max, Min

from portal.core import audit, audit_chain
from portal.core.audit import GENESIS_HASH, canonical, sign
from portal.core.audit_chain import ChainCheck, iter_chain, split_ranges
from portal.core.models import AuditEvent

committed = pytest.mark.django_db(transaction=True)

# Characters JSON escapes, characters it must not, and characters outside the BMP.
ALPHABET = [
    *string.ascii_letters, *string.digits, " ", '"', "\\", "/", "'", "\n", "\r", "\t", "\b",
    "\f", "\x01", "\x1f", "\x7f", "\x80", "é", "ß", "Ω", "中", "\u2028", "\u2029", "\ufeff",
    "😀", "𝄞", "<", ">", "&", ":", ",", "{", "}", "[", "]",
]  # fmt: skip
FLOATS = [0.1, 1e-7, 1e16, 1.5, -2.25, 123456789.125, 1e300, 5e-324, -0.0, 3.0]
INTS = [0, -1, 2**31 - 1, 2**53 + 1, 2**70, -(2**64)]
IPS = [
    "10.0.0.1", "192.0.2.255", "0.0.0.0", "2001:db8::1", "::1", "::", "::ffff:192.0.2.1",
    "fe80::1ff:fe23:4567:890a", "2001:DB8:0:0:1:0:0:1", "2001:db8:85a3::8a2e:370:7334",
]  # fmt: skip
TIMES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(999, 5, 1, 1, 2, 3, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 11, 22, 12, 0, tzinfo=UTC),  # microsecond == 0
    datetime(2026, 11, 22, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
]


def text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(longest + 1)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "none"] + (["list", "dict"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return text(rng, 12)
    if kind == "int":
        return rng.choice([*INTS, rng.randrange(-(10**9), 10**9)])
    if kind == "float":
        return rng.choice([*FLOATS, rng.uniform(-1e6, 1e6), rng.random() / 3])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    # Keys whose code-point order differs from jsonb's (shorter keys first).
    keys = {text(rng, 5) for _ in range(rng.randrange(5))} | rng.choice([set(), {"b", "aa", "é"}])
    return {key: json_value(rng, depth + 1) for key in keys}


def payload(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return None
    if roll < 0.4:
        return json_value(rng, 2)  # a bare string, number, list, ...
    return {text(rng, 8): json_value(rng, 1) for _ in range(rng.randrange(1, 5))}


def random_ip(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.5:
        return rng.choice(IPS)
    if roll < 0.8:
        return ".".join(str(rng.randrange(256)) for _ in range(4))
    return ":".join(f"{rng.randrange(0x10000):x}" for _ in range(8))


def random_time(rng: random.Random) -> datetime:
    if rng.random() < 0.15:
        return rng.choice(TIMES)
    moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**9))
    offset = timezone(timedelta(minutes=15 * rng.randrange(-48, 57)))
    micro = rng.choice([0, rng.randrange(1_000_000)])
    return moment.replace(microsecond=micro).astimezone(offset)


def maybe_id(rng: random.Random) -> int | None:
    return rng.choice([None, rng.randrange(1, 2**31 - 1), 1, -5])


def generated_events(count: int, seed: int) -> list[AuditEvent]:
    rng = random.Random(seed)
    return [
        AuditEvent(
            seq=seq,
            at=random_time(rng),
            actor_id=maybe_id(rng),
            actor_name=text(rng, 30),
            action=text(rng, 20),
            target_type=text(rng, 20),
            target_id=text(rng, 20),
            target_repr=text(rng, 80),
            application_id=maybe_id(rng),
            environment_id=maybe_id(rng),
            before=payload(rng),
            after=payload(rng),
            ip=random_ip(rng),
            request_id=text(rng, 32),
            prev_hash="",
            hash="",
        )  # fmt: skip
        for seq in range(1, count + 1)
    ]


def with_triggers_off(sql: str, params: list | None = None, many: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER USER")
        if many is not None:
            cursor.executemany(sql, many)
        else:
            cursor.execute(sql, params or [])
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER USER")


def rechain(key: bytes | None = None, start: int = 1) -> None:
    """Sign every event from `start` on, as read back through the ORM, with canonical()."""
    prev_hash, updates = GENESIS_HASH, []
    for row in iter_chain():
        if row[0] < start:
            prev_hash = row[15]
            continue
        new_hash = sign(canonical(*row[:14], prev_hash), key=key)
        updates.append([prev_hash, new_hash, row[0]])
        prev_hash = new_hash
    with_triggers_off("UPDATE portal_auditevent SET prev_hash = %s, hash = %s WHERE seq = %s",
                      many=updates)  # fmt: skip


def verdict(check: ChainCheck) -> tuple:
    return (check.ok, check.checked, check.last_seq, check.last_at, check.broken_seq,
            check.reason)  # fmt: skip


def all_verdicts(key: bytes | None = None, parallel: tuple[int, ...] = (2, 3)) -> ChainCheck:
    """Run every path; assert they agree; return the reference's verdict."""
    reference = audit_chain.verify_chain(rows=iter_chain(), key=key)
    sequential = audit_chain.verify_chain(key=key)
    assert verdict(sequential) == verdict(reference), "sequential fast path"
    for workers in parallel:
        check = audit_chain.verify_chain(key=key, workers=workers)
        assert verdict(check) == verdict(reference), f"{workers} workers"
        assert check.workers == processes_for(workers)
    return reference


def processes_for(workers: int) -> int:
    span = AuditEvent.objects.aggregate(low=Min("seq"), high=Max("seq"))
    return len(split_ranges(span["low"], span["high"], workers)) if span["low"] else 1


def record_chain(count: int) -> None:
    """`count` events appended through audit.record(), with payloads like the portal's."""
    rng = random.Random(count)
    for n in range(count):
        before = None if n % 4 == 0 else {"status": rng.choice(["queued", "running"])}
        after = {"status": "queued"} if n % 3 else {"n": n, "note": text(rng, 12), "ok": True}
        audit.record(f"test.event{n % 5}", ("test.thing", n, f"thing {n}"), before=before,
                     after=after)  # fmt: skip


@committed
def test_it_accepts_exactly_what_canonical_signed_for_generated_events():
    """Every event signed over canonical() of its ORM read-back must verify on every
    path: an HMAC over the fast path's bytes matches only if the bytes are identical."""
    events = generated_events(400, seed=20261122)
    AuditEvent.objects.bulk_create(events)
    rechain()
    check = all_verdicts()
    assert check.ok and check.checked == 400 and check.last_seq == 400


@committed
def test_it_accepts_them_with_a_json_memo_that_keeps_being_cleared(monkeypatch):
    monkeypatch.setattr(audit_chain, "_JSON_MEMO_SIZE", 2)
    AuditEvent.objects.bulk_create(generated_events(120, seed=7))
    rechain()
    check = all_verdicts(parallel=(2,))
    assert check.ok and check.checked == 120


@committed
def test_it_reports_an_intact_chain_the_same_way_on_every_path():
    record_chain(30)
    check = all_verdicts(parallel=(2, 3, 4))
    last = AuditEvent.objects.order_by("-seq").first()
    assert (check.ok, check.checked, check.last_seq, check.last_at) == (True, 30, 30, last.at)
    assert audit_chain.verify_chain(workers=2).workers == 2


@committed
def test_it_reports_an_empty_trail_as_intact_on_every_path():
    check = all_verdicts()
    assert verdict(check) == (True, 0, None, None, None, "")


@committed
def test_it_rejects_the_wrong_key_at_the_first_event_on_every_path():
    record_chain(12)
    check = all_verdicts(key=b"not the key")
    assert (check.ok, check.broken_seq, check.checked) == (False, 1, 0)
    assert "event #1 does not match its signature" in check.reason


EVENTS = 40  # two workers verify 1..20 and 21..40; three 1..14, 15..28, 29..40
POSITIONS = {"start": 1, "middle": 10, "end of a range": 20, "start of a range": 21, "end": 40}


def tamper(kind: str, seq: int) -> None:
    if kind == "edited":
        with_triggers_off("UPDATE portal_auditevent SET after = '{\"status\": \"forged\"}' "
                          "WHERE seq = %s", [seq])  # fmt: skip
    elif kind == "deleted":
        with_triggers_off("DELETE FROM portal_auditevent WHERE seq = %s", [seq])
    elif kind == "unlinked":
        with_triggers_off("UPDATE portal_auditevent SET prev_hash = %s WHERE seq = %s",
                          ["f" * 64, seq])  # fmt: skip
    elif kind == "re-signed":
        rechain(key=b"guess", start=seq)


@committed
@pytest.mark.parametrize("kind", ["edited", "deleted", "unlinked", "re-signed"])
@pytest.mark.parametrize("position", list(POSITIONS))
def test_every_path_reports_the_same_first_broken_event(kind, position):
    assert split_ranges(1, EVENTS, 2) == [(1, 20), (21, EVENTS)]
    record_chain(EVENTS)
    seq = POSITIONS[position]
    tamper(kind, seq)
    check = all_verdicts()
    if kind == "deleted" and seq == EVENTS:
        # Cutting the newest events off leaves a shorter intact chain: the chain
        # alone cannot tell; the last seq reported is what an auditor compares.
        assert (check.ok, check.checked, check.last_seq) == (True, EVENTS - 1, EVENTS - 1)
        return
    assert not check.ok
    assert check.broken_seq == seq
    assert check.checked == seq - 1
    expected = {
        "edited": f"event #{seq} does not match its signature",
        "re-signed": f"event #{seq} does not match its signature",
        "deleted": f"event #{seq} is missing (next found is #{seq + 1})",
        "unlinked": f"event #{seq} does not link to the hash of event #{seq - 1}",
    }[kind]
    assert check.reason.startswith(expected)


@committed
@pytest.mark.parametrize(
    "breaks, first",
    [((25, 5), 5), ((21, 15), 15), ((40, 20), 20), ((21, 22), 21)],
)
def test_the_lowest_break_wins_whichever_range_it_is_in(breaks, first):
    record_chain(EVENTS)
    for seq in breaks:
        tamper("edited", seq)
    check = all_verdicts()
    assert (check.ok, check.broken_seq, check.checked) == (False, first, first - 1)


@committed
@pytest.mark.parametrize(
    "deleted, reason",
    [
        ((20, 21), "event #20 is missing (next found is #22)"),
        ((1,), "event #1 is missing (next found is #2)"),
        (tuple(range(11, 21)), "event #11 is missing (next found is #21)"),  # a whole range
    ],
)
def test_gaps_at_the_seams_are_reported_as_the_sequential_walk_does(deleted, reason):
    record_chain(EVENTS)
    for seq in deleted:
        tamper("deleted", seq)
    check = all_verdicts(parallel=(2, 3, 4))
    assert not check.ok and check.reason == reason


@committed
@pytest.mark.parametrize("moment", ["0001-01-01 00:00:00+00 BC", "infinity", "-infinity"])
def test_it_reports_a_date_python_cannot_represent_as_a_broken_signature(moment):
    """The ORM cannot even read these; the fast paths must not let them through."""
    record_chain(EVENTS)
    with_triggers_off("UPDATE portal_auditevent SET at = %s::timestamptz WHERE seq = 21", [moment])
    for workers in (1, 2):
        check = audit_chain.verify_chain(workers=workers)
        assert (check.ok, check.broken_seq, check.checked) == (False, 21, 20)
        assert "does not match its signature" in check.reason


def test_it_walks_sequentially_inside_a_transaction(db):
    """Worker processes could not see this transaction's uncommitted events."""
    record_chain(6)
    check = audit_chain.verify_chain(workers=2)
    assert (check.ok, check.checked, check.workers) == (True, 6, 1)


def test_it_signs_a_null_the_schema_does_not_allow_as_canonical_does(db):
    """A column made nullable behind the portal's back still yields canonical()'s bytes."""
    record_chain(3)
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("ALTER TABLE portal_auditevent ALTER COLUMN actor_name DROP NOT NULL")
    with_triggers_off("UPDATE portal_auditevent SET actor_name = NULL WHERE seq = 2")
    assert not audit_chain.verify_chain().ok
    rechain(start=2)
    assert AuditEvent.objects.get(seq=2).actor_name is None
    check = audit_chain.verify_chain()
    assert verdict(check) == verdict(audit_chain.verify_chain(rows=iter_chain()))
    assert check.ok and check.checked == 3


def test_it_cuts_ranges_contiguously_without_overlap():
    assert split_ranges(1, 10, 3) == [(1, 4), (5, 8), (9, 10)]
    assert split_ranges(5, 5, 4) == [(5, 5)]
    assert split_ranges(1, 2, 4) == [(1, 1), (2, 2)]
    assert split_ranges(-3, 6, 2) == [(-3, 1), (2, 6)]


@pytest.mark.parametrize(
    "text",
    ['{"b": 1, "a": [1.5, null, "é"]}', '"just text"', "12", "1e400", ' {"a": 1}', '{"a": 1} ',
     "\ufeff{}", '{"a": 1}{"b": 2}', "not json", "", "[1, 2", "null", "true", "-0.0"],
)  # fmt: skip
def test_it_parses_json_text_as_djangos_json_field_does(text):
    field = AuditEvent._meta.get_field("after")
    assert audit_chain._parse_json(text) == field.from_db_value(text, None, connection)


def test_it_serialises_json_values_as_json_dumps_does():
    rng = random.Random(1)
    values = [json_value(rng) for _ in range(2000)] + [payload(rng) for _ in range(500)]
    values += [None, 'x\u2028"\\', 1e16, float("nan"), float("inf"), -0.0, 2**70, True, [], {}]
    for value in values:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert audit_chain._canonical_json(value) == expected
