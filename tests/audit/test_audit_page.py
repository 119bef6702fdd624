"""The audit trail page: /audit/."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.core import audit
from portal.core.models import AuditEvent
from tests.conftest import env

URL = reverse("audit")


def seqs(response) -> list[int]:
    return [event.seq for event in response.context["events"]]


def test_it_shows_the_events_a_member_may_see(client, users, trail):
    client.force_login(users["dave"])
    response = client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "deployment.requested" in page
    assert "release.registered" in page
    assert "Bedrock timeout fix" in page  # the "after" of the request, compactly
    assert "fraud-detector/staging" in page
    assert "ledger" not in page
    assert seqs(response) == sorted(seqs(response), reverse=True)


def test_it_sends_anonymous_users_to_sign_in(client, trail):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_refuses_post(client, users):
    client.force_login(users["dave"])
    assert client.post(URL).status_code == 405


def test_it_shows_mallory_nothing_of_fraud_detector(client, users, trail):
    client.force_login(users["mallory"])
    response = client.get(URL)
    assert response.status_code == 200
    events = response.context["events"]
    assert all(e.application_id is None and e.environment_id is None for e in events)
    assert "fraud-detector" not in response.content.decode()
    # She still sees her own sign-in.
    assert [e.action for e in events] == ["auth.signed_in"]


def test_it_shows_the_superuser_everything(client, root, trail):
    client.force_login(root)
    response = client.get(URL)
    assert set(seqs(response)) == set(AuditEvent.objects.values_list("seq", flat=True))
    assert trail["ledger_event"].seq in seqs(response)


def test_it_filters_by_action_actor_and_environment(client, users, trail, catalog):
    client.force_login(users["erin"])
    response = client.get(URL, {"action": "deployment.requested"})
    assert [e.action for e in response.context["events"]] == ["deployment.requested"]
    response = client.get(URL, {"actor": "alice"})
    assert {e.actor_name for e in response.context["events"]} == {"alice"}
    dev = env(catalog, "dev")
    response = client.get(URL, {"environment": dev.pk})
    assert response.context["events"] == []
    staging = env(catalog, "staging")
    response = client.get(URL, {"environment": staging.pk, "since": "2000-01-01"})
    assert [e.action for e in response.context["events"]] == ["deployment.requested"]
    # The export links carry the same filters.
    page = response.content.decode()
    assert f"export.csv?environment={staging.pk}&amp;since=2000-01-01" in page


def test_an_action_ending_in_a_dot_finds_every_action_of_its_kind(client, users, trail, catalog):
    staging = env(catalog, "staging")
    audit.record("deployment.approved", trail["deployment"], environment=staging,
                 actor=users["bob"])  # fmt: skip
    audit.record("deploymentx.other", ("x", 1, "x"), environment=staging)  # not of the kind
    client.force_login(users["erin"])

    for prefix in ("deployment.", "deployment"):
        response = client.get(URL, {"action": prefix})
        actions = [e.action for e in response.context["events"]]
        assert actions == ["deployment.approved", "deployment.requested"], prefix
    # A whole action still means exactly that one.
    response = client.get(URL, {"action": "deployment.approved"})
    assert [e.action for e in response.context["events"]] == ["deployment.approved"]


def test_the_actor_filter_ignores_case(client, users, trail):
    client.force_login(users["erin"])

    for typed in ("alice", "Alice", "ALICE"):
        response = client.get(URL, {"actor": typed})
        assert {e.actor_name for e in response.context["events"]} == {"alice"}, typed
        assert response.context["events"]


def test_the_table_scrolls_inside_its_own_box(client, users, trail):
    client.force_login(users["dave"])
    page = client.get(URL).content.decode()
    assert '<div class="table-scroll">\n<table class="table audit-table"' in page


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"environment": "production"}, "environment"),
        ({"since": "2025-02-01", "until": "2025-01-01"}, "until"),
        ({"before": "12abc"}, "before"),
    ],
)
def test_it_rejects_a_bad_filter_naming_the_field(client, users, trail, params, field):
    client.force_login(users["dave"])
    response = client.get(URL, params)
    assert response.status_code == 400
    assert field in response.context["errors"]
    assert f'data-field="{field}"' in response.content.decode()
    assert response.context["events"] == []


def test_it_pages_by_seq_without_counting(client, users, catalog, django_assert_max_num_queries):
    staging = env(catalog, "staging")
    for number in range(120):
        audit.record("deployment.note", ("x", number, f"note {number}"), environment=staging)
    client.force_login(users["dave"])
    with django_assert_max_num_queries(12) as captured:
        first = client.get(URL, {"action": "deployment.note"})
    # Keyset pagination: nothing counts the table, however long the trail.
    assert not any("COUNT(" in query["sql"] for query in captured.captured_queries)
    assert len(first.context["events"]) == 50
    assert first.context["newer_query"] is None
    older = first.context["older_query"]
    assert older == f"action=deployment.note&before={first.context['events'][-1].seq}"
    second = client.get(f"{URL}?{older}")
    assert seqs(second) == [s - 50 for s in seqs(first)]
    third = client.get(f"{URL}?{second.context['older_query']}")
    assert len(third.context["events"]) == 20
    assert third.context["older_query"] is None
    # Back to newer events from the last page.
    back = client.get(f"{URL}?{third.context['newer_query']}")
    assert seqs(back) == seqs(second)
