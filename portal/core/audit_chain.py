"""Verifying the audit chain: walk it from the first event and name the
first one that does not hold (missing, unlinked or not matching its HMAC).

The reference walk rebuilds each event's signed bytes with
`audit.canonical()`; on PostgreSQL a fast path reads rows already formatted
by the server, optionally in several processes over seq ranges, and reports
the same first broken event (tests/portal/test_verify_chain_fast.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection

from portal.core.audit import CHAIN_FIELDS, GENESIS_HASH, canonical
from portal.core.models import AuditEvent


@dataclass
class ChainCheck:
    ok: bool
    checked: int
    last_seq: int | None
    last_at: datetime | None
    broken_seq: int | None = None
    reason: str = ""
    workers: int = 1  # processes that read the trail (1: the sequential walk)


def iter_chain(chunk_size: int = 20_000) -> Iterator[tuple]:
    # A server-side cursor on PostgreSQL: memory stays flat however long the trail.
    return AuditEvent.objects.order_by("seq").values_list(*CHAIN_FIELDS).iterator(chunk_size)


def _missing(expected_seq: int, found_seq: int) -> str:
    return f"event #{expected_seq} is missing (next found is #{found_seq})"


def _unlinked(seq: int) -> str:
    return f"event #{seq} does not link to the hash of event #{seq - 1}"


def _unsigned(seq: int) -> str:
    return f"event #{seq} does not match its signature (edited or re-signed)"


def verify_chain(
    rows: Iterator[tuple] | None = None, key: bytes | None = None, workers: int = 1
) -> ChainCheck:
    """Walk the chain from the first event; report the first event that does not hold.

    `rows` (CHAIN_FIELDS tuples, e.g. iter_chain()) walks them with canonical()
    itself: the reference the fast paths are tested against. Without rows,
    PostgreSQL is read through the fast path, in `workers` processes when more
    than one is asked for; every path reports the same first broken event.
    SQLite (the embedded demo) always gets the reference walk.
    """
    key = key or settings.AUDIT_KEY
    if rows is None and _fast_path_available():
        if workers > 1 and not connection.in_atomic_block:
            return _verify_parallel(key, workers)
        # Inside a transaction only this connection sees its uncommitted rows.
        return _verify_sequential_fast(key)
    return _verify_rows(rows if rows is not None else iter_chain(), key)


def _fast_path_available() -> bool:
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3  # the fast path speaks psycopg 3 (named cursors, adapters)


def _verify_rows(rows: Iterator[tuple], key: bytes) -> ChainCheck:
    """The reference walk: ORM rows, each signed content rebuilt by canonical()."""
    expected_seq, prev_hash = 1, GENESIS_HASH
    checked, last_at = 0, None
    hmac_new, sha256, compare = hmac.new, hashlib.sha256, hmac.compare_digest
    for row in rows:
        seq, stored_prev, stored_hash = row[0], row[14], row[15]
        if seq != expected_seq:
            reason = _missing(expected_seq, seq)
            return ChainCheck(False, checked, expected_seq - 1, last_at, expected_seq, reason)
        if stored_prev != prev_hash:
            return ChainCheck(False, checked, seq - 1, last_at, seq, _unlinked(seq))
        content = canonical(*row[:15])
        if not compare(hmac_new(key, content, sha256).hexdigest(), stored_hash):
            return ChainCheck(False, checked, seq - 1, last_at, seq, _unsigned(seq))
        checked += 1
        expected_seq, prev_hash, last_at = seq + 1, stored_hash, row[1]
    return ChainCheck(True, checked, expected_seq - 1 if checked else None, last_at)


# The fast path (PostgreSQL). The rows arrive as text PostgreSQL has already
# put in the form canonical() gives it: `at` formatted by to_char() exactly as
# isoformat(timespec="microseconds") in UTC (" BC" appended, or NULL for
# ±infinity: dates Python cannot represent never match a signature); jsonb and
# inet read as the same text the ORM reads (Django registers text loaders for
# both). The signed bytes are then assembled without building a datetime or a
# list per row; tests/portal/test_verify_chain_fast.py proves them identical
# to canonical()'s.
_FAST_SQL = """
SELECT seq,
       to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
           || CASE WHEN at < '0001-01-01T00:00:00+00:00' THEN ' BC' ELSE '' END,
       actor_id, actor_name, action, target_type, target_id, target_repr, application_id,
       environment_id, before, after, ip, request_id, prev_hash, hash
FROM portal_auditevent
"""
_FETCH_ROWS = 20_000
# Distinct before/after texts remembered per walk; cleared when full so memory stays flat.
_JSON_MEMO_SIZE = 4096
_json_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses
_scan_json = json.JSONDecoder().scan_once


def _json_serialiser() -> Callable[[Any], str]:
    """json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).

    The C encoder json.dumps builds on every call, built once. Values parsed
    from JSON cannot be circular, so the circular-reference check is left out.
    """
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    make = json.encoder.c_make_encoder
    if make is None:  # no C accelerator: json.dumps' own path
        return encoder.encode
    chunks = make(None, encoder.default, _json_string, None, ":", ",", True, False, True)
    return lambda value: "".join(chunks(value, 0))


_canonical_json = _json_serialiser()


@dataclass
class _Walk:
    """What a walk over (part of) the chain found; picklable, for the workers."""

    checked: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    last_at: str | None = None  # canonical text, turned into a datetime at the end
    broken_seq: int | None = None
    reason: str = ""


def _json_value(text: str | None, memo: dict[str, str]) -> str:
    """canonical()'s serialisation of a jsonb column read as text.

    PostgreSQL's own jsonb text differs from json.dumps (key order, spaces,
    number forms), so it is parsed and re-serialised. The result depends only
    on the text, so it is remembered by the exact text: transitions such as
    {"status": "queued"} recur on most events.
    """
    if text is None:
        return "null"
    done = memo.get(text)
    if done is None:
        if len(memo) >= _JSON_MEMO_SIZE:
            memo.clear()
        done = memo[text] = _canonical_json(_parse_json(text))
    return done


def _parse_json(text: str) -> Any:
    """The value Django's JSONField.from_db_value makes of a jsonb text.

    jsonb's output is always exactly one JSON value; it is scanned directly,
    without json.loads' checks around it. Anything else goes through
    json.loads, and text that is not JSON stays text, as in from_db_value.
    """
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, json.JSONDecodeError):
        end = -1
    if end == len(text):
        return value
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _canonical_slow(row: tuple, before: str, after: str) -> bytes:
    """canonical() on a fast row whose columns are not the types the schema promises."""
    fields = [json.dumps(value, ensure_ascii=False) for value in row[:15]]
    fields[10], fields[11] = before, after
    return ("[" + ",".join(fields) + "]").encode()


def _walk_fast(rows, key: bytes, expected_seq: int, prev_hash: str) -> _Walk:
    """The checks of _verify_rows() on fast rows, from the given position in the chain."""
    walk = _Walk()
    digest, compare, string = hmac.digest, hmac.compare_digest, _json_string
    memo: dict[str, str] = {}
    checked, last_at = 0, None
    for row in rows:
        (seq, at, actor_id, actor_name, action, target_type, target_id, target_repr,
         application_id, environment_id, before, after, ip, request_id, stored_prev,
         stored_hash) = row  # fmt: skip
        if seq != expected_seq:
            walk.broken_seq, walk.reason = expected_seq, _missing(expected_seq, seq)
            break
        if stored_prev != prev_hash:
            walk.broken_seq, walk.reason = seq, _unlinked(seq)
            break
        before, after = _json_value(before, memo), _json_value(after, memo)
        try:
            content = (
                f'[{seq},"{at}",{"null" if actor_id is None else actor_id},{string(actor_name)},'
                f"{string(action)},{string(target_type)},{string(target_id)},"
                f"{string(target_repr)},{'null' if application_id is None else application_id},"
                f"{'null' if environment_id is None else environment_id},{before},{after},"
                f"{'null' if ip is None else string(ip)},{string(request_id)},"
                f"{string(stored_prev)}]"
            ).encode()
        except TypeError:  # a NULL where the schema has NOT NULL: let json.dumps say "null"
            content = _canonical_slow(row, before, after)
        if not compare(digest(key, content, "sha256").hex(), stored_hash):
            walk.broken_seq, walk.reason = seq, _unsigned(seq)
            break
        checked += 1
        expected_seq, prev_hash, last_at = seq + 1, stored_hash, at
    walk.checked, walk.last_at = checked, last_at
    if checked:
        walk.last_seq, walk.last_hash = expected_seq - 1, prev_hash
    return walk


def _fast_cursor(raw, lo: int | None = None, hi: int | None = None):
    """A named (server-side) cursor over the chain, or over seq lo..hi, in seq order."""
    from psycopg.types.string import TextLoader

    cursor = raw.cursor(name="verify_audit_chain")
    cursor.adapters.register_loader("jsonb", TextLoader)
    cursor.adapters.register_loader("inet", TextLoader)
    cursor.itersize = _FETCH_ROWS
    if lo is None:
        cursor.execute(_FAST_SQL + "ORDER BY seq")
    else:
        cursor.execute(_FAST_SQL + "WHERE seq BETWEEN %s AND %s ORDER BY seq", [lo, hi])
    return cursor


def _prefetched(cursor, size: int = _FETCH_ROWS) -> Iterator[tuple]:
    """The cursor's rows, the next batch fetched by a thread while this one is checked.

    PostgreSQL formats a batch (to_char, jsonb and inet output) while Python
    hashes the previous one, instead of each waiting for the other. The thread
    only waits on the socket; the rows are consumed here, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="verify-audit-fetch") as fetcher:
        batch = cursor.fetchmany(size)
        while batch:
            following = fetcher.submit(cursor.fetchmany, size)
            yield from batch
            batch = following.result()


def _parse_at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _verify_sequential_fast(key: bytes) -> ChainCheck:
    connection.ensure_connection()
    raw = connection.connection
    with raw.transaction(), _fast_cursor(raw) as cursor, closing(_prefetched(cursor)) as rows:
        walk = _walk_fast(rows, key, 1, GENESIS_HASH)
    last_at = _parse_at(walk.last_at)
    if walk.broken_seq is not None:
        broken = walk.broken_seq
        return ChainCheck(False, walk.checked, broken - 1, last_at, broken, walk.reason)
    return ChainCheck(True, walk.checked, walk.last_seq, last_at)


def split_ranges(low: int, high: int, workers: int) -> list[tuple[int, int]]:
    """Cut seq low..high into at most `workers` contiguous, nearly equal ranges."""
    span = high - low + 1
    count = max(1, min(workers, span))
    size = -(-span // count)
    return [(start, min(start + size - 1, high)) for start in range(low, high + 1, size)]


def _connection_params() -> dict[str, Any]:
    """psycopg.connect() arguments for the default database, for the worker processes."""
    params = connection.get_connection_params()
    # Only plain values cross to the worker processes; the adapters are set per cursor.
    plain = {k: v for k, v in params.items() if isinstance(v, str | int)}
    role = connection.settings_dict["OPTIONS"].get("assume_role")
    return {**plain, "_assume_role": role} if role else plain


def _connect(params: dict[str, Any]):
    import psycopg
    from psycopg import sql

    params = dict(params)
    role = params.pop("_assume_role", None)
    raw = psycopg.connect(**params, autocommit=True)
    if role:
        raw.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return raw


def _verify_range(params: dict[str, Any], snapshot: str, lo: int, hi: int, key: bytes) -> _Walk:
    """Worker process: verify seq lo..hi as seen by the coordinator's snapshot.

    The range's first event is taken at its word (its seq and prev_hash); the
    coordinator checks it against the previous range's last event.
    """
    from psycopg import sql

    with _connect(params) as raw:
        raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        raw.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        with _fast_cursor(raw, lo, hi) as cursor, closing(_prefetched(cursor)) as rows:
            first = next(rows, None)
            if first is None:
                walk = _Walk()
            else:
                walk = _walk_fast(_chain_first(first, rows), key, first[0], first[14])
                walk.first_seq, walk.first_prev = first[0], first[14]
        raw.execute("ROLLBACK")
    return walk


def _chain_first(first: tuple, rows: Iterator[tuple]) -> Iterator[tuple]:
    yield first
    yield from rows


def _verify_parallel(key: bytes, workers: int) -> ChainCheck:
    """Verify contiguous seq ranges in worker processes, then join them in order.

    Every event's HMAC covers its own stored prev_hash, so a range can be
    checked without the one before it; what is left is the seams. The walks are
    joined exactly as the sequential walk would meet them, so the first broken
    event, the count before it and the reason are the same.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    params = _connection_params()
    with _connect(params) as coordinator:
        # One snapshot for every worker: appends made meanwhile are not half-seen.
        coordinator.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot, low, high = coordinator.execute(
            "SELECT pg_export_snapshot(), min(seq), max(seq) FROM portal_auditevent"
        ).fetchone()
        if low is None:
            return ChainCheck(True, 0, None, None)
        ranges = split_ranges(low, high, workers)
        # fork, not spawn: spawn re-runs the parent's main script in each child,
        # which an unguarded script cannot survive. The children use nothing they
        # inherit but the arguments: each opens its own connection.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(ranges), mp_context=context) as pool:
            jobs = [pool.submit(_verify_range, params, snapshot, lo, hi, key) for lo, hi in ranges]
            walks = [job.result() for job in jobs]
        coordinator.execute("ROLLBACK")
    return _join(walks, len(ranges))


def _join(walks: list[_Walk], workers: int) -> ChainCheck:
    """The sequential walk's verdict from the walks of consecutive ranges."""
    expected_seq, prev_hash, checked, last_at = 1, GENESIS_HASH, 0, None

    def broken(seq: int, reason: str, checked: int, last_at: str | None) -> ChainCheck:
        return ChainCheck(False, checked, seq - 1, _parse_at(last_at), seq, reason, workers)

    for walk in walks:
        if walk.first_seq is None:  # no event in this range at all
            continue
        if walk.first_seq != expected_seq:
            return broken(expected_seq, _missing(expected_seq, walk.first_seq), checked, last_at)
        if walk.first_prev != prev_hash:
            return broken(walk.first_seq, _unlinked(walk.first_seq), checked, last_at)
        if walk.broken_seq is not None:
            at = walk.last_at if walk.checked else last_at
            return broken(walk.broken_seq, walk.reason, checked + walk.checked, at)
        checked += walk.checked
        expected_seq, prev_hash, last_at = walk.last_seq + 1, walk.last_hash, walk.last_at
    return ChainCheck(True, checked, expected_seq - 1 if checked else None, _parse_at(last_at),
                      workers=workers)  # fmt: skip
