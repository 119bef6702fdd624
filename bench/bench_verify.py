"""verify_chain() over the whole trail: events per second (goal >= 100,000/s).

Also measures `proposed_verify`, a prototype of the change suggested for
portal/audit.py in docs/PERFORMANCE.md: the same checks, fed by one SQL query
on a named cursor that returns `at` already in canonical form, instead of
Django's values_list() (which builds a datetime per row only for canonical()
to format it back). It must agree with verify_chain() on every chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

GOAL = 100_000

PROPOSED_SQL = """
SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), actor_id,
       actor_name, action, target_type, target_id, target_repr, application_id, environment_id,
       before::text, after::text, host(ip), request_id, prev_hash, hash
FROM portal_auditevent ORDER BY seq
"""


def proposed_verify(key: bytes) -> tuple[bool, int]:
    """The checks of portal.audit.verify_chain on rows PostgreSQL has pre-formatted."""
    from django.db import connection

    from portal.audit import GENESIS_HASH

    dumps, loads = json.dumps, json.loads
    new, sha256, compare = hmac.new, hashlib.sha256, hmac.compare_digest
    expected, prev_hash, checked = 1, GENESIS_HASH, 0
    connection.ensure_connection()
    raw = connection.connection
    with raw.transaction(), raw.cursor(name="verify_audit") as cursor:
        cursor.itersize = 20_000
        cursor.execute(PROPOSED_SQL)
        for row in cursor:
            seq, stored_prev, stored_hash = row[0], row[14], row[15]
            if seq != expected or stored_prev != prev_hash:
                return False, checked
            before, after = row[10], row[11]
            content = dumps(
                [*row[:10], None if before is None else loads(before),
                 None if after is None else loads(after), *row[12:15]],
                sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            ).encode()  # fmt: skip
            if not compare(new(key, content, sha256).hexdigest(), stored_hash):
                return False, checked
            checked += 1
            expected, prev_hash = seq + 1, stored_hash
    return True, checked


def _rate(function, repeats: int) -> tuple[list[float], int]:
    rates, checked = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        ok, checked = function()
        elapsed = time.perf_counter() - started
        if not ok:
            raise SystemExit("the bench chain is broken")
        rates.append(checked / elapsed)
    return sorted(rates), checked


def run(repeats: int = 3) -> dict:
    from django.conf import settings

    from portal.audit import verify_chain

    def current() -> tuple[bool, int]:
        check = verify_chain()
        return check.ok, check.checked

    rates, checked = _rate(current, repeats)
    proposed, _ = _rate(lambda: proposed_verify(settings.AUDIT_KEY), repeats)
    median = rates[len(rates) // 2]
    return {
        "events": checked,
        "runs": repeats,
        "events_per_s_median": round(median),
        "events_per_s_all": [round(r) for r in rates],
        "seconds_median": round(checked / median, 2),
        "goal_events_per_s": GOAL,
        "meets_goal": median >= GOAL,
        "proposed_events_per_s_median": round(proposed[len(proposed) // 2]),
        "proposed_events_per_s_all": [round(r) for r in proposed],
    }
