"""The releases that succeeded in an environment, as the environment page and
the rollback form list them, against a plain reading of the rule: each
release once, by its newest success (latest_first: finish time, newest first,
none last, then id), newest first, at most `limit`; the first runs now."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.choices import Kind, Status
from deployments.models import Deployment, Release
from deployments.rollback import succeeded_releases
from tests.conftest import env, image

pytestmark = pytest.mark.django_db

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
VERSIONS = ("1.3.0", "1.4.0", "1.5.0", "1.6.0")
# Finish times from a few minutes, so that equal times (ordered by id) and
# none (a row recorded by hand) both come up.
runs = st.lists(
    st.tuples(
        st.sampled_from(VERSIONS),
        st.sampled_from([Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED]),
        st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
    ),
    max_size=12,
)


def expected(rows: list[Deployment], limit: int) -> list[tuple[str, int]]:
    newest_first = sorted(
        (d for d in rows if d.status == Status.SUCCEEDED),
        key=lambda d: (d.finished_at is not None, d.finished_at or 0, d.pk),
        reverse=True,
    )
    firsts: dict[str, int] = {}
    for d in newest_first:
        firsts.setdefault(d.release.version, d.pk)
    return list(firsts.items())[:limit]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=runs, limit=st.integers(min_value=1, max_value=5))
def test_each_release_once_by_its_newest_success(catalog, users, history, limit):
    staging = env(catalog, "staging")
    Deployment.objects.filter(environment=staging).delete()
    releases = {
        version: Release.objects.filter(application=catalog, version=version).first()
        or Release.register(
            catalog, version, {s: image(s, str(i)) for s in SERVICES}, users["alice"],
        )
        for i, version in enumerate(VERSIONS)
    }  # fmt: skip
    base = timezone.now() - timedelta(hours=1)
    rows = [
        Deployment.objects.create(
            release=releases[version], environment=staging, reason="ran", kind=Kind.DEPLOY,
            requested_by=users["alice"], status=status,
            finished_at=None if minute is None else base + timedelta(minutes=minute),
        )
        for version, status, minute in history
    ]  # fmt: skip

    shown = succeeded_releases(staging, limit=limit)

    assert [(s.release.version, s.deployment.pk) for s in shown] == expected(rows, limit)
    assert [s.runs_now for s in shown] == [i == 0 for i in range(len(shown))]
