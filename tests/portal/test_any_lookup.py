"""`field__any=[...]` (portal/core/lookups.py): what `__in` answers, with the
list bound as one parameter, so a prepared query can take a list of
environments; and the inbox's prepared queries that use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Prefetch
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deployments import inbox
from deployments.models import Approval, Deployment
from environments.models import Application, Environment, FreezeOverride
from portal.core.prepared import PreparedQueryError, prepared
from tests.api.conftest import request_deployment
from tests.compiles import compiled_models
from tests.conftest import env
from tests.deployments.test_logline_key_migration import ROOT, migrate

pytestmark = pytest.mark.django_db


@prepared(environment_ids=list)
def environments_in(environment_ids):
    return Environment.objects.filter(pk__any=environment_ids).order_by("pk")


@pytest.fixture
def environment_ids(catalog) -> list[int]:
    return list(Environment.objects.order_by("pk").values_list("pk", flat=True))


@given(data=st.data())
@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_it_answers_what_in_answers(environment_ids, data):
    """Any list: empty, repeated values, values of no row, in any order; on
    the key and on a foreign key; prepared or not."""
    known = st.sampled_from(environment_ids)
    unknown = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    ids = data.draw(st.lists(st.one_of(known, unknown), max_size=8))
    application_ids = list(Application.objects.values_list("pk", flat=True))

    expected = list(Environment.objects.filter(pk__in=ids).order_by("pk"))
    assert list(Environment.objects.filter(pk__any=ids).order_by("pk")) == expected
    assert environments_in.list(environment_ids=ids) == expected
    assert set(Environment.objects.filter(application_id__any=application_ids + ids)) == set(
        Environment.objects.filter(application_id__in=application_ids + ids)
    )


def test_its_sql_is_the_same_for_any_length(environment_ids):
    def sql(ids):
        return Environment.objects.filter(pk__any=ids).query.sql_with_params()

    (one, one_params), (many, many_params) = sql(environment_ids[:1]), sql(environment_ids)
    assert one == many and "ANY" in one
    assert (len(one_params), len(many_params)) == (1, 1)


def test_a_prepared_list_query_compiles_once(environment_ids, settings):
    settings.PREPARED_QUERIES_CHECK = False  # the check compiles each call as Django would

    @prepared(environment_ids=list)
    def rows(environment_ids):
        return Environment.objects.filter(pk__any=environment_ids).order_by("pk")

    with compiled_models() as compiled:
        rows.list(environment_ids=environment_ids[:1])
        first = len(compiled)
        compiled.clear()
        with CaptureQueriesContext(connection) as queries:
            answers = [rows.list(environment_ids=environment_ids[:n]) for n in (0, 1, 3)]
    assert first == 2  # with each of the two sets of stand-ins
    assert compiled == []
    assert len(environment_ids) == 3  # the catalog's development, staging, production
    assert [len(a) for a in answers] == [0, 1, 3] and len(queries) == 3


@pytest.mark.parametrize("value", ["12", 12, [True], [1.5], [None], {"a": 1}])
def test_anything_but_a_list_of_integers_is_refused(value):
    with pytest.raises(TypeError, match="list of integers"):
        Environment.objects.filter(pk__any=value)


@pytest.mark.parametrize("value", [(1, 2), [1, "2"], [False]])
def test_a_prepared_list_value_must_be_a_list_of_integers(environment_ids, value):
    with pytest.raises(TypeError, match="environment_ids must be"):
        environments_in.list(environment_ids=value)


def test_a_value_in_a_prefetch_is_refused(release, users):
    """A prefetch runs as it was built, from the stand-ins: a value used in its
    queryset would be the stand-in's, silently."""

    @prepared(environment_id=int, user_id=int)
    def rows(environment_id, user_id):
        approvals = Prefetch("approvals", queryset=Approval.objects.filter(user_id=user_id))
        return Deployment.objects.filter(environment_id=environment_id).prefetch_related(approvals)

    staging = env(release.application, "staging")
    with pytest.raises(PreparedQueryError, match="a value is used in a prefetch's queryset"):
        rows.list(environment_id=staging.pk, user_id=users["bob"].pk)


def test_sqlite_answers_what_in_answers(tmp_path):
    """`make run`'s SQLite: `IN (SELECT value FROM json_each(...))`, with the
    list bound as JSON text, prepared or not."""
    url = f"sqlite:///{tmp_path / 'gantry.sqlite3'}"
    migrate(url)
    script = """
import json
from environments.models import Application, Environment
from portal.core.prepared import prepared
environments_in = prepared(environment_ids=list)(
    lambda environment_ids: Environment.objects.filter(pk__any=environment_ids).order_by("pk")
)
app = Application.objects.create(slug="fraud-detector", name="Fraud Detector")
pks = [Environment.objects.create(application=app, slug=s, name=s, order=n).pk
       for n, s in enumerate(["dev", "staging", "production"])]
answers = {}
for ids in ([], pks[:1], [pks[2], pks[0], pks[0], 10**12], pks):
    answers[json.dumps(ids)] = [
        [e.pk for e in Environment.objects.filter(pk__in=ids).order_by("pk")],
        [e.pk for e in Environment.objects.filter(pk__any=ids).order_by("pk")],
        [e.pk for e in environments_in.list(environment_ids=ids)],
        [e.pk for e in Environment.objects.filter(application_id__any=[app.pk] + ids)],
    ]
print(json.dumps({"answers": answers, "app": app.pk, "pks": pks}))
"""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["answers"]) == 4
    for ids, (by_in, by_any, prepared_any, by_application) in result["answers"].items():
        assert by_any == by_in == prepared_any, ids
        assert sorted(by_application) == result["pks"]
    assert result["answers"][json.dumps([])][0] == []


def test_the_badge_compiles_no_query_again(client, users, release, settings):
    """The navigation badge after every page: who may decide where, the
    deployments waiting with their images and one's own approvals of them,
    and the break-glass requests are read by queries compiled once a process."""
    settings.PREPARED_QUERIES_CHECK = False
    deployment = request_deployment(release, users, "staging")
    glass = FreezeOverride.request(
        env(release.application, "production"), users["erin"], "INC-9", timedelta(hours=1)
    )
    root = User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")
    client.force_login(users["bob"])
    assert ">2</span>" in client.get(reverse("approvals-count")).content.decode()
    superuser = Client()
    superuser.force_login(root)
    assert ">1</span>" in superuser.get(reverse("approvals-count")).content.decode()

    with compiled_models() as compiled:
        badge = client.get(reverse("approvals-count")).content.decode()
        waiting = inbox.deployments_awaiting(users["bob"])
        overrides = inbox.overrides_awaiting(users["bob"])
    with compiled_models() as compiled_for_root:
        root_badge = superuser.get(reverse("approvals-count")).content.decode()
    assert ">2</span>" in badge and ">1</span>" in root_badge
    assert waiting == [deployment] and overrides == [glass]
    assert compiled == []
    assert compiled_for_root == []
