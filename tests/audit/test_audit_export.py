"""The audit exports: /audit/export.csv and /audit/export.json."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest
from django.urls import reverse

from portal.core.audit import canonical, sign
from portal.core.models import AuditEvent

CSV_URL = reverse("audit-export-csv")
JSON_URL = reverse("audit-export-json")


def body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body(response))))


def test_it_streams_a_csv_of_the_visible_events(client, users, trail):
    client.force_login(users["dave"])
    response = client.get(CSV_URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="gantry-audit-')
    rows = csv_rows(response)
    actions = [row["action"] for row in rows]
    assert "deployment.requested" in actions and "release.registered" in actions
    assert all(row["environment"] != "ledger/production" for row in rows)
    requested = next(row for row in rows if row["action"] == "deployment.requested")
    assert requested["environment"] == "fraud-detector/staging"
    assert requested["application"] == "fraud-detector"
    assert json.loads(requested["after"])["reason"] == "Bedrock timeout fix"
    assert len(requested["hash"]) == 64 and len(requested["prev_hash"]) == 64


def test_it_exports_only_the_filtered_events_as_json(client, users, trail):
    client.force_login(users["erin"])
    response = client.get(JSON_URL, {"action": "deployment.requested"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    events = json.loads(body(response))
    assert [e["action"] for e in events] == ["deployment.requested"]
    assert events[0]["after"]["release"] == "1.4.0"
    assert events[0]["target_id"] == str(trail["deployment"].pk)
    # erin sees ledger? No: she administers fraud-detector only.
    assert events[0]["environment"] == "fraud-detector/staging"


def test_an_auditor_can_reverify_every_exported_event_with_the_key(client, root, trail, settings):
    client.force_login(root)
    events = json.loads(body(client.get(JSON_URL)))
    assert len(events) == AuditEvent.objects.count()
    by_seq = {e["seq"]: e for e in events}
    for event in events:
        content = canonical(
            event["seq"], datetime.fromisoformat(event["at"]), event["actor_id"], event["actor"],
            event["action"], event["target_type"], event["target_id"], event["target"],
            event["application_id"], event["environment_id"], event["before"], event["after"],
            event["ip"], event["request_id"], event["prev_hash"],
        )  # fmt: skip
        assert sign(content, key=settings.AUDIT_KEY) == event["hash"]
        if event["seq"] - 1 in by_seq:
            assert by_seq[event["seq"] - 1]["hash"] == event["prev_hash"]


def test_the_export_is_itself_audited_before_streaming(client, users, trail):
    client.force_login(users["dave"])
    response = client.get(CSV_URL, {"action": "release.registered"})
    # Not a single row consumed yet: the event is already there.
    event = AuditEvent.objects.filter(action="audit.export").get()
    assert event.actor_name == "dave"
    assert event.after == {"format": "csv", "filters": {"action": "release.registered"}}
    assert response.streaming
    response.close()


def test_mallory_exports_nothing_of_fraud_detector(client, users, trail):
    client.force_login(users["mallory"])
    rows = csv_rows(client.get(CSV_URL))
    assert rows and all(row["application"] == "" and row["environment"] == "" for row in rows)
    assert {row["actor"] for row in rows} == {"mallory"}


@pytest.mark.parametrize("url", [CSV_URL, JSON_URL])
def test_it_rejects_a_bad_filter_naming_the_field(client, users, trail, url):
    client.force_login(users["dave"])
    response = client.get(url, {"until": "31/12/2025"})
    assert response.status_code == 400
    assert response.json()["field"] == "until"
    assert not AuditEvent.objects.filter(action="audit.export").exists()


@pytest.mark.parametrize("url", [CSV_URL, JSON_URL])
def test_it_sends_anonymous_users_to_sign_in(client, trail, url):
    response = client.get(url)
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(action="audit.export").exists()


@pytest.mark.parametrize("url", [CSV_URL, JSON_URL])
def test_it_refuses_post(client, users, url):
    client.force_login(users["dave"])
    assert client.post(url).status_code == 405


def test_the_portable_export_matches_the_postgresql_one(trail):
    """The SQLite demo formats rows in Python; both paths must say the same."""
    from portal import audit_views

    events = AuditEvent.objects.order_by("seq")
    by_database = b"".join(audit_views._csv_copy(events)).decode()
    portable = "".join(audit_views._csv_python(events))
    database_rows = list(csv.DictReader(io.StringIO(by_database)))
    portable_rows = list(csv.DictReader(io.StringIO(portable)))
    assert len(database_rows) == len(portable_rows) == events.count()
    for ours, theirs in zip(database_rows, portable_rows, strict=True):
        for column in ("before", "after"):
            assert json.loads(ours.pop(column) or "null") == json.loads(
                theirs.pop(column) or "null"
            )
        assert ours == theirs
    documents = [json.loads(d) for d in audit_views._json_documents(events)]
    assert documents == [json.loads(d) for d in audit_views._python_documents(events)]
