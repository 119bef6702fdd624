"""Prepared queries (portal/core/prepared.py): SQL compiled once a process,
run with each call's values, giving what Django's own evaluation gives."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import prefetch_related_objects
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from deployments.choices import Kind, Status
from deployments.models import (
    Artifact,
    Deployment,
    Release,
    artifacts_with_services,
    load_artifacts,
    runs_now_in,
)
from deployments.rollback import default_target, last_run, succeeded_releases
from environments.models import Environment, FreezeWindow
from environments.views import decorate_environment
from portal.core.prepared import PreparedQuery, PreparedQueryError, keep_prefetched, prepared
from portal.core.roles import PolicyError
from tests.compiles import compiled_models
from tests.conftest import env, image
from tests.strategies import run_machine

pytestmark = pytest.mark.django_db


def deployment_rows() -> PreparedQuery:
    """A fresh prepared query (nothing compiled yet), joined and prefetched as a page reads it."""

    @prepared(environment_id=int, status=str)
    def rows(environment_id, status):
        return (
            Deployment.objects.filter(environment_id=environment_id, status=status)
            .select_related("release__application", "requested_by")
            .prefetch_related("release__artifacts")
            .order_by("-id")
        )

    return rows


def images(char: str) -> dict[str, str]:
    return {s: image(s, char) for s in ("fraud-api", "fraud-ml", "fraud-worker")}


def django_rows(environment_id, status) -> list[Deployment]:
    return list(deployment_rows().build(environment_id=environment_id, status=status))


def seen(rows: list[Deployment]) -> list[tuple]:
    """What a page reads of each row, through its joins and prefetch."""
    return [
        (
            d.pk, d.status, d.release.version, d.release.application.slug,
            d.requested_by.username if d.requested_by else None,
            sorted(a.image_ref for a in d.release.artifacts.all()),
        )
        for d in rows
    ]  # fmt: skip


def test_it_reads_what_django_reads(release, users):
    staging = env(release.application, "staging")
    requested = Deployment.request(release, staging, users["alice"], "to staging")
    rows = deployment_rows()
    for status in (requested.status, Status.SUCCEEDED):
        assert seen(rows.list(environment_id=staging.pk, status=status)) == seen(
            django_rows(staging.pk, status)
        )
    assert [d.pk for d in rows.list(environment_id=staging.pk, status=requested.status)] == [
        requested.pk
    ]


def test_it_compiles_once_then_runs_one_query_a_call(release, users, settings):
    settings.PREPARED_QUERIES_CHECK = False  # the check compiles each call as Django would
    staging = env(release.application, "staging")
    status = Deployment.request(release, staging, users["alice"], "to staging").status
    rows = deployment_rows()
    with compiled_models() as compiled:
        rows.list(environment_id=staging.pk, status=status)
        first = compiled.count(Deployment)
        compiled.clear()
        with CaptureQueriesContext(connection) as queries:
            for _ in range(3):
                assert len(rows.list(environment_id=staging.pk, status=status)) == 1
    assert first == 2  # with each of the two sets of stand-ins
    assert Deployment not in compiled  # the artifacts' prefetch is compiled as usual
    assert len(queries) == 6  # each call: its own query and the prefetch
    assert str(staging.pk) in queries[0]["sql"]


def test_of_reads_a_parents_rows_each_pointing_back_at_it(release, users):
    staging = env(release.application, "staging")
    requested = Deployment.request(release, staging, users["alice"], "to staging")
    rows = prepared(environment_id=int)(
        lambda environment_id: Deployment.objects.filter(environment_id=environment_id)
    )
    found = rows.of(staging)
    assert [d.pk for d in found] == [requested.pk]
    with CaptureQueriesContext(connection) as queries:
        assert found[0].environment is staging
    assert len(queries) == 0


def test_of_needs_one_value_naming_the_parents_key(release):
    staging = env(release.application, "staging")
    with pytest.raises(TypeError, match="needs one value named <field>_id"):
        deployment_rows().of(staging)
    by_slug = prepared(slug=str)(lambda slug: Environment.objects.filter(slug=slug))
    with pytest.raises(TypeError, match="needs one value named <field>_id"):
        by_slug.of(staging)


@pytest.mark.parametrize(
    "value, message",
    [(True, "must be int, not bool"), (None, "must be int, not NoneType"),
     ("5", "must be int, not str"), (5.0, "must be int, not float")],
)  # fmt: skip
def test_a_value_of_another_type_is_refused(value, message):
    with pytest.raises(TypeError, match=message):
        deployment_rows().list(environment_id=value, status="succeeded")


def test_the_values_must_be_the_declared_ones():
    with pytest.raises(TypeError, match=r"takes \['environment_id', 'status'\]"):
        deployment_rows().list(environment_id=1)


def test_only_ints_and_strings_may_be_declared():
    with pytest.raises(TypeError, match="int, str or list, not <class 'float'>"):
        prepared(ratio=float)(lambda ratio: Deployment.objects.filter(pk=ratio))


def test_a_value_used_as_a_slice_is_refused():
    rows = prepared(limit=int)(lambda limit: Deployment.objects.order_by("pk")[:limit])
    with pytest.raises(PreparedQueryError, match="a value used as a slice"):
        rows.list(limit=3)


def test_a_value_the_query_ignores_is_refused():
    rows = prepared(pk=int)(lambda pk: Deployment.objects.filter(pk=1))
    with pytest.raises(PreparedQueryError, match="pk is not a parameter of its SQL"):
        rows.list(pk=3)


def test_sql_that_depends_on_the_values_is_refused():
    rows = prepared(pk=int)(
        lambda pk: Deployment.objects.filter(pk=pk).order_by("id" if pk % 2 else "-id")
    )
    with pytest.raises(PreparedQueryError, match="its SQL depends on the values"):
        rows.list(pk=1)


def test_the_check_catches_sql_that_changes_for_one_real_value(settings):
    def build(pk):
        # Wrong: one real value (never a stand-in) changes the query.
        deployments = Deployment.objects.filter(pk=pk)
        return deployments.filter(status="failed") if pk == 7 else deployments

    rows = prepared(pk=int)(build)
    settings.PREPARED_QUERIES_CHECK = True
    assert rows.list(pk=8) == []
    with pytest.raises(PreparedQueryError, match="builds other SQL than it was prepared with"):
        rows.list(pk=7)


def test_a_related_manager_is_refused(release):
    staging = env(release.application, "staging")
    rows = prepared(status=str)(lambda status: staging.deployments.filter(status=status))
    with pytest.raises(PreparedQueryError, match="not a related manager"):
        rows.list(status="succeeded")


def test_a_constant_equal_to_a_stand_in_stays_a_constant(release, users):
    staging = env(release.application, "staging")
    wanted = Deployment.request(release, staging, users["alice"], "to staging")
    # 32001 is the first stand-in for an int: here it is also a constant of the query.
    rows = prepared(pk=int)(
        lambda pk: Deployment.objects.filter(pk=pk).exclude(environment_id=32_001)
    )
    assert [d.pk for d in rows.list(pk=wanted.pk)] == [wanted.pk]
    assert rows.list(pk=wanted.pk + 1000) == []


@pytest.mark.django_db(transaction=True)
def test_each_thread_runs_it_on_its_own_connection(catalog, users):
    """Compiled in this thread, run in others at once: each call on the
    caller's own connection (Django refuses a connection of another thread)."""
    release = Release.register(catalog, "1.4.0", images("a"), users["alice"])
    environments = [env(catalog, slug) for slug in ("dev", "staging", "production")]
    requested = {
        e.pk: Deployment.objects.create(
            release=release, environment=e, reason="run", requested_by=users["alice"],
            status=Status.SUCCEEDED, finished_at=timezone.now(),
        )
        for e in environments
    }  # fmt: skip
    rows = deployment_rows()
    rows.list(environment_id=environments[0].pk, status=Status.FAILED)  # compiled here
    barrier = threading.Barrier(len(environments))
    found, errors = {}, []

    def read(environment_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            status = requested[environment_id].status
            for _ in range(20):
                found[environment_id] = [
                    d.pk for d in rows.list(environment_id=environment_id, status=status)
                ]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=read, args=(e.pk,)) for e in environments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert found == {pk: [deployment.pk] for pk, deployment in requested.items()}


# -- the prepared queries of the pages, under random histories ------------------

STATUSES = [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.AWAITING_APPROVAL]


class PagesQueriesSequences(RuleBasedStateMachine):
    """Runs recorded, finished and rolled away from in random order: what runs
    now, the last run, the rollback target, the releases that succeeded and
    the environment before, each as Django's plain querysets answer it."""

    world: dict = {}

    @rule(
        which=st.integers(0, 2), release=st.integers(0, 2), status=st.sampled_from(STATUSES),
        kind=st.sampled_from([Kind.DEPLOY, Kind.ROLLBACK]), finished=st.one_of(
            st.none(), st.integers(-5, 5)),
    )  # fmt: skip
    def record_a_run(self, which, release, status, kind, finished):
        finished_at = None if finished is None else self.world["now"] + timedelta(hours=finished)
        Deployment.objects.create(
            release=self.world["releases"][release], environment=self.world["envs"][which],
            kind=kind, reason="ran", requested_by=self.world["user"], status=status,
            finished_at=finished_at if status != Status.AWAITING_APPROVAL else None,
        )  # fmt: skip

    @rule(which=st.integers(0, 2))
    def roll_away_from_the_newest_success(self, which):
        newest = (
            Deployment.objects.filter(environment=self.world["envs"][which])
            .succeeded_latest_first().first()
        )  # fmt: skip
        if newest is not None:
            Deployment.objects.filter(pk=newest.pk).update(rolled_back_at=self.world["now"])

    @invariant()
    def each_answer_is_djangos(self):
        for environment in self.world["envs"]:
            environment = Environment.objects.get(pk=environment.pk)
            plain = environment.deployments.runs_now()
            running = runs_now_in(environment)
            assert (running and (running.pk, running.release.version)) == (
                plain and (plain.pk, plain.release.version)
            )
            assert running is None or running.environment is environment
            plain_last = (
                Deployment.objects.filter(environment=environment, status__in=(
                    Status.SUCCEEDED, Status.FAILED, Status.CANCELLED))
                .latest_first().first()
            )  # fmt: skip
            assert last_run(environment) == plain_last
            assert self._target(environment) == self._plain_target(environment, plain_last)
            shown = succeeded_releases(environment)
            assert [s.deployment.pk for s in shown] == self._plain_succeeded(environment)
            assert environment.previous() == (
                Environment.objects.filter(
                    application_id=environment.application_id, order__lt=environment.order
                ).order_by("-order").first()
            )  # fmt: skip

    @staticmethod
    def _target(environment):
        try:
            target, undo = default_target(environment)
        except PolicyError as exc:
            return exc.message
        return target.pk, undo.pk

    @staticmethod
    def _plain_target(environment, undo):
        if undo is None:
            return f"Nothing has run in {environment} yet; there is nothing to roll back."
        if undo.kind == Kind.ROLLBACK and undo.status != Status.SUCCEEDED:
            return undo.release.pk, undo.pk
        target = (
            Deployment.objects.filter(environment=environment, kind=Kind.DEPLOY,
                                      status=Status.SUCCEEDED, rolled_back_at__isnull=True)
            .exclude(release_id=undo.release_id).latest_first().first()
        )  # fmt: skip
        if target is None:
            return (
                f"No release other than {undo.release.version} succeeded in {environment} "
                "without being rolled back from since: there is nothing to roll back to."
            )
        return target.release.pk, undo.pk

    @staticmethod
    def _plain_succeeded(environment) -> list[int]:
        newest = {}
        for run in environment.deployments.succeeded_latest_first():
            newest.setdefault(run.release_id, run.pk)
        return list(newest.values())[:20]


def test_the_pages_prepared_queries_answer_as_django_under_random_histories(catalog, users):
    releases = [
        Release.register(catalog, version, images(char), users["alice"])
        for version, char in (("1.3.0", "b"), ("1.4.0", "c"), ("1.5.0", "d"))
    ]
    PagesQueriesSequences.world = {
        "envs": [env(catalog, slug) for slug in ("dev", "staging", "production")],
        "releases": releases, "user": users["alice"], "now": timezone.now(),
    }  # fmt: skip
    run_machine(PagesQueriesSequences, examples=25, steps=15)


# -- children kept as prefetched (keep_prefetched, load_artifacts) ---------------


def artifacts_seen(release: Release) -> list[tuple]:
    """What the pages read of a release's artifacts, through their joins."""
    return [
        (a.pk, a.release.pk, a.service.slug, a.image_ref) for a in release.artifacts.all()
    ]  # fmt: skip


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(picks=st.lists(st.integers(0, 3), min_size=1, max_size=4))
def test_load_artifacts_reads_what_a_prefetch_reads(catalog, users, picks):
    """Any one to four releases, the same one twice or as two objects: each
    reads what Django's prefetch gives it, with one query and none after."""
    releases = list(Release.objects.filter(application=catalog).order_by("pk"))
    for index in range(len(releases), 4):  # every release has its own images
        releases.append(
            Release.register(catalog, f"2.{index}.0", images("abcd"[index]), users["alice"])
        )
    ours = [Release.objects.get(pk=releases[i].pk) for i in picks]
    django = [Release.objects.get(pk=releases[i].pk) for i in picks]
    prefetch_related_objects(django, artifacts_with_services())
    with CaptureQueriesContext(connection) as loading:
        load_artifacts(*ours)
    with CaptureQueriesContext(connection) as reading:
        assert [artifacts_seen(r) for r in ours] == [artifacts_seen(r) for r in django]
    assert len(loading) == 1  # one prepared query, however many releases
    assert len(reading) == 0


def test_load_artifacts_compiles_once_for_any_number_of_releases(release, users, settings):
    settings.PREPARED_QUERIES_CHECK = False  # the check compiles each call as Django would
    other = Release.register(release.application, "1.5.0", images("b"), users["alice"])
    third = Release.register(release.application, "1.6.0", images("c"), users["alice"])
    load_artifacts(release)  # compiled, if nothing did before
    with compiled_models() as compiled:
        load_artifacts(Release.objects.get(pk=release.pk))
        load_artifacts(Release.objects.get(pk=release.pk), Release.objects.get(pk=other.pk))
        load_artifacts(*Release.objects.filter(pk__in=[release.pk, other.pk, third.pk]))
    assert Artifact not in compiled


def test_keep_prefetched_refuses_what_a_prefetch_would_not_keep(release, users):
    with pytest.raises(TypeError, match="not a reverse foreign key"):
        keep_prefetched(release, "created_by", [])
    other = Release.register(release.application, "1.5.0", images("b"), users["alice"])
    with pytest.raises(PreparedQueryError, match="is not one of"):
        keep_prefetched(release, "artifacts", list(other.artifacts.all()))


def test_keep_prefetched_replaces_an_earlier_prefetch(release, users):
    """Kept twice (a page reloading a parent's rows): the second list is the answer."""
    fresh = Release.objects.prefetch_related("artifacts").get(pk=release.pk)
    before = fresh.artifacts.all()
    assert len(before) == 3
    kept = [a for a in Artifact.objects.filter(release=release) if a.service.slug == "fraud-ml"]
    keep_prefetched(fresh, "artifacts", kept)
    with CaptureQueriesContext(connection) as queries:
        assert [a.pk for a in fresh.artifacts.all()] == [kept[0].pk]
        assert fresh.artifacts.all()[0].release is fresh
        assert len(before) == 3  # what a caller holds from before is left as it was
    assert len(queries) == 0


def test_an_environments_freeze_windows_are_read_once_prepared(release, users):
    staging = env(release.application, "staging")
    now = timezone.now()
    FreezeWindow.objects.create(
        environment=staging, kind="one_off", reason="quarter close",
        starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1),
    )  # fmt: skip
    fresh = Environment.objects.get(pk=staging.pk)
    with CaptureQueriesContext(connection) as queries:
        decorate_environment(fresh)
        assert fresh.freeze is not None and fresh.freeze[0].reason == "quarter close"
        assert [w.reason for w in fresh.freeze_windows.all()] == ["quarter close"]
        decorate_environment(fresh)  # again: the windows are read once
    assert len(queries) == 1
    prefetched = Environment.objects.prefetch_related("freeze_windows").get(pk=staging.pk)
    with CaptureQueriesContext(connection) as queries:
        decorate_environment(prefetched)  # what the caller prefetched is kept
        assert prefetched.freeze[0].reason == "quarter close"
    assert len(queries) == 0
