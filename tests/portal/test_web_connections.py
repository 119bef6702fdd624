"""The web server (uvicorn, ASGI, as deployed) holds at most its pool's
connections to PostgreSQL however many requests it serves: ASGI runs each
request's view in a thread of its own, and a connection kept per thread
(DB_CONN_MAX_AGE) was never reused there: 130 requests in a row left the
database out of connections."""

from __future__ import annotations

import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from portal.core import tokens
from tests.servers import database_url, web_server

pytestmark = pytest.mark.django_db(transaction=True)
POOL = 4
REQUESTS = 150
NAME = "gantry-web-under-test"


def server_backends() -> int:
    """The web server's connections (it names itself to PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [NAME])
        return cursor.fetchone()[0]


def test_many_requests_hold_no_more_connections_than_the_pool(users, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("connections are pooled on PostgreSQL only")
    _, key = tokens.issue(users["alice"], "ci")

    def get(_: int) -> int:
        request = urllib.request.Request(
            url + "/api/v1/deployments/", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status

    database = f"{database_url()}?application_name={NAME}"
    with web_server(tmp_path / "web.log", DATABASE_URL=database, DB_POOL_MAX_SIZE=str(POOL),
                    DB_POOL_MIN_SIZE="1") as url:  # fmt: skip
        with ThreadPoolExecutor(10) as clients:  # ten at a time, as a busy hour would
            statuses = Counter(clients.map(get, range(REQUESTS)))
        held = server_backends()

    assert statuses == {200: REQUESTS}
    assert 1 <= held <= POOL, (tmp_path / "web.log").read_text()[-3000:]
