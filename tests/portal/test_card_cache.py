"""Dashboard cards kept in the cache (portal/card_cache.py): served while
nothing changed, built again after any change commits, never across roles."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from redis.exceptions import ConnectionError as RedisConnectionError

from deployments.choices import Status
from environments import live
from environments.choices import AlarmState
from environments.live import card_versions, environment_changed, touch
from environments.models import Step
from portal import card_cache
from tests.conftest import env, grant
from tests.environments.ui import browser
from tests.live import FLUSH_SECONDS
from tests.portal.test_dashboard_view import alarm, card_html, cards, deployment


def page(client) -> str:
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return response.content.decode()


def cards_section(html: str) -> str:
    return html[html.index('id="dashboard"') : html.index("<script")]


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_an_unchanged_card_is_served_from_the_cache(users, catalog):
    client = browser(users["dave"])
    url = reverse("dashboard-card", args=[env(catalog, "dev").pk])
    built = queries(client, url)
    assert queries(client, url) == 3 < built  # session, user, environment
    first = page(client)
    assert cards_section(page(client)) == cards_section(first)


@pytest.mark.django_db(transaction=True)
def test_a_change_committed_by_the_engine_rebuilds_the_card(users, catalog, release):
    """Real commits (no test transaction around them): the commit callbacks run."""
    staging = env(catalog, "staging")
    client = browser(users["dave"])
    assert "nothing yet" in card_html(page(client), staging)
    page(client)  # kept now
    running = deployment(release, staging, Status.RUNNING, users["alice"])
    running.finish(Status.SUCCEEDED)  # audits, then environment_changed after commit
    live.flush(FLUSH_SECONDS)  # the card is built in the background after the commit
    # Built when the change committed: the page finds it kept.
    url = reverse("dashboard-card", args=[staging.pk])
    assert queries(client, url) == 3
    html = client.get(url).content.decode()
    assert "1.4.0" in html and "Succeeded" in html


@pytest.mark.django_db(transaction=True)
def test_the_card_is_built_after_the_commit_callbacks_before_it(users, catalog, monkeypatch):
    """A deployment's job is enqueued before its card is built: a repeated
    change moves the card's update behind callbacks registered meanwhile."""
    dev = env(catalog, "dev")
    ran = []
    monkeypatch.setattr(live, "_send", lambda pk, what: ran.append(("card", pk)))
    with transaction.atomic():
        environment_changed(dev.pk, "deployment")
        transaction.on_commit(lambda: ran.append("enqueue"))
        environment_changed(dev.pk, "deployment")
    assert ran == ["enqueue", ("card", dev.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_updates_no_card_but_a_moved_one_survives(users, catalog, monkeypatch):
    dev = env(catalog, "dev")
    ran = []
    monkeypatch.setattr(live, "_send", lambda pk, what: ran.append(pk))

    def rolled_back_block() -> None:
        try:
            with transaction.atomic():
                environment_changed(dev.pk, "deployment")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    with transaction.atomic():
        rolled_back_block()
    assert ran == []
    with transaction.atomic():
        environment_changed(dev.pk, "deployment")  # committed with the outer block
        rolled_back_block()  # moves it, with the outer block's savepoints
    assert ran == [dev.pk]


@pytest.mark.parametrize(
    "edit, shown",
    [("environment", "Production (ca-central-1)"), ("step", "step 1 of 1"),
     ("alarm", "ServiceDown")],
)  # fmt: skip
@pytest.mark.django_db(transaction=True)
def test_an_edit_outside_the_engine_rebuilds_the_card(users, catalog, release, edit, shown):
    """The admin saves models; the signal receivers rebuild the card on commit."""
    production = env(catalog, "production")
    deployment(release, production, Status.RUNNING, users["alice"])
    client = browser(users["dave"])
    assert shown not in card_html(page(client), production)
    if edit == "environment":
        production.name = "Production (ca-central-1)"
        production.save()
    elif edit == "step":
        Step.objects.create(environment=production, order=1, name="health", kind="http_check")
    else:
        alarm(production, "fraud-detector-production-ServiceDown", AlarmState.ALARM)
    assert shown in card_html(page(client), production)


def test_a_card_built_before_a_change_is_not_served_after_it(users, catalog):
    """The race: a card built from data read before a change, kept after the
    change's new version was written, is kept under the old version only."""
    dev = env(catalog, "dev")
    before = card_versions([dev.pk])[dev.pk]
    touch([dev.pk])  # the change commits
    after = card_versions([dev.pk])[dev.pk]
    assert after != before
    stale_key = card_cache.CARD_KEY.format(dev.pk, before, card_cache.reporting_day().isoformat())
    cache.set(stale_key, ("<article>stale</article>", 0, False), 60)
    html = page(browser(users["dave"]))
    assert "stale" not in html
    assert cards(html).count(str(dev.pk)) == 1


def test_a_kept_card_is_never_shown_to_someone_without_a_role(users, catalog):
    production = env(catalog, "production")
    page(browser(users["dave"]))  # every card kept
    grant(users["mallory"], env(catalog, "dev"), "viewer")
    outsider = browser(users["mallory"])
    assert cards(page(outsider)) == [str(env(catalog, "dev").pk)]
    url = reverse("dashboard-card", args=[production.pk])
    assert outsider.get(url).status_code == 404


def test_it_builds_every_card_when_the_cache_is_down(users, catalog, monkeypatch):
    def down(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(cache, "get_many", down)
    monkeypatch.setattr(cache, "set_many", down)
    html = page(browser(users["dave"]))
    assert len(cards(html)) == 3


def test_a_new_version_for_a_vanished_one(users, catalog):
    """An evicted version key comes back as a new value, never an old one."""
    dev = env(catalog, "dev")
    first = card_versions([dev.pk])[dev.pk]
    cache.delete(f"card-version:{dev.pk}")
    assert card_versions([dev.pk])[dev.pk] != first


@pytest.mark.django_db(transaction=True)
def test_environment_changed_touches_after_commit(users, catalog):
    dev = env(catalog, "dev")
    before = card_versions([dev.pk])[dev.pk]
    with transaction.atomic():
        environment_changed(dev.pk, "deployment")
        assert card_versions([dev.pk])[dev.pk] == before  # not before the commit
    assert card_versions([dev.pk])[dev.pk] != before
