"""GET /deployments/<pk>/evidence.json and /deployments/<pk>/evidence.html:
the evidence pack an auditor takes away."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse

from deployments.evidence import build_pack
from deployments.models import CostEstimate, Deployment, LogLine
from portal.core.audit import CHAIN_FIELDS, canonical, sign
from portal.core.jobs import verify_audit_chain
from portal.core.models import AuditEvent
from tests.conftest import image
from tests.deployments.history import LOG, PLAN_SHA, RESOURCE_CHANGES, alarm_history, shipped
from tests.environments.ui import browser, last_event

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


@pytest.fixture
def deployment(release, users) -> Deployment:
    users["bob"].first_name, users["bob"].last_name = "Bob", "Okafor"
    users["bob"].save()
    return shipped(release, users)


def json_url(deployment) -> str:
    return reverse("deployment-evidence-json", args=[deployment.pk])


def html_url(deployment) -> str:
    return reverse("deployment-evidence-html", args=[deployment.pk])


def download(user, deployment) -> dict:
    response = browser(user).get(json_url(deployment))
    assert response.status_code == 200
    return json.loads(response.content)


def tamper(sql: str, params: list) -> None:
    # As an attacker with database access would: past the append-only triggers.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER USER")


def test_it_downloads_the_pack_as_an_attachment(users, deployment):
    response = browser(users["dave"]).get(json_url(deployment))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="deployment-{deployment.pk}-evidence.json"'
    )
    pack = json.loads(response.content)
    assert pack["format"] == "gantry-evidence/1"
    assert pack["deployment"]["id"] == deployment.pk
    assert pack["deployment"]["status"] == "succeeded"
    assert pack["deployment"]["environment"]["slug"] == "production"
    assert pack["deployment"]["requested_by"] == {
        "username": "alice", "full_name": "", "email": "alice@example.com"
    }  # fmt: skip


def test_it_lists_the_release_and_its_artifact_digests(users, deployment):
    release = download(users["dave"], deployment)["release"]
    assert release["version"] == "1.4.0"
    assert release["commit"] == "3f9c2ab"
    assert release["registered_by"]["username"] == "alice"
    assert release["artifacts"] == [
        {"service": s, "image": image(s), "repository": image(s).split("@")[0],
         "digest": "sha256:" + "a" * 64}
        for s in SERVICES
    ]  # fmt: skip


def test_it_carries_the_plan_hash_and_the_resource_diff(users, deployment):
    plan = download(users["dave"], deployment)["plan"]
    assert plan["plan_sha256"] == PLAN_SHA
    assert plan["approval_digest"] == deployment.approval_digest()
    assert len(plan["steps"]) == 1
    assert plan["steps"][0]["plan_sha256"] == PLAN_SHA
    assert plan["steps"][0]["resource_changes"] == RESOURCE_CHANGES
    assert plan["steps"][0]["summary"] == {"add": 1, "change": 1, "destroy": 0}


def test_it_says_when_the_cost_was_not_estimated(users, deployment):
    assert download(users["dave"], deployment)["cost"] == {"estimated": False}
    html = browser(users["dave"]).get(html_url(deployment)).content.decode()
    assert "Cost not estimated." in html


def test_it_carries_the_cost_delta(users, deployment):
    CostEstimate.objects.create(
        deployment=deployment, region="ca-central-1", monthly_total_usd=Decimal("185.20"),
        previous_monthly_usd=Decimal("152.35"), catalog_version="2026-11-01",
        resources=[{"address": "aws_nat_gateway.main[1]", "type": "aws_nat_gateway",
                    "monthly_usd": 32.85, "previous_monthly_usd": 0, "components": []}],
    )  # fmt: skip
    cost = download(users["dave"], deployment)["cost"]
    assert cost["estimated"] is True
    assert cost["monthly_total_usd"] == "185.20"
    assert cost["delta_monthly_usd"] == "32.85"
    assert cost["resources"][0]["address"] == "aws_nat_gateway.main[1]"
    html = browser(users["dave"]).get(html_url(deployment)).content.decode()
    assert "change <strong>32.85 USD/month</strong>" in html


def test_it_names_the_approvers_and_what_they_approved(users, deployment):
    approvals = download(users["dave"], deployment)["approvals"]
    digest = deployment.approval_digest()
    assert [(a["approver"]["username"], a["decision"]) for a in approvals] == [
        ("bob", "approve"), ("carol", "approve")
    ]  # fmt: skip
    assert approvals[0]["approver"] == {
        "username": "bob", "full_name": "Bob Okafor", "email": "bob@example.com"
    }  # fmt: skip
    assert approvals[0]["comment"] == "diff checked"
    assert {a["digest"] for a in approvals} == {digest}
    assert all(a["bound_to_what_shipped"] for a in approvals)
    stored = {a.user.username: a.created_at for a in deployment.approvals.all()}
    assert approvals[0]["at"] == stored["bob"].astimezone(UTC).isoformat(timespec="microseconds")


def test_it_states_the_policy_in_force(users, deployment):
    policy = download(users["dave"], deployment)["policy"]
    assert policy["required_approvals"] == 2
    assert policy["at_request"] == {
        "required_approvals": 2, "approver_group": None, "second_approver_group": None,
        "approval_ttl_hours": 24, "require_previous_success": True,
        "rollback_required_approvals": 1, "implementers_may_not_approve": False,
        "approval_mfa_minutes": None, "image_verification": "off",
        "cost_increase_limit_usd": None, "cost_approval_group": None,
    }  # fmt: skip
    assert policy["current"] == policy["at_request"]


def test_it_reports_each_step(users, deployment):
    steps = download(users["dave"], deployment)["steps"]
    assert [(s["order"], s["name"], s["kind"], s["status"]) for s in steps] == [
        (1, "Terraform", "terraform", "succeeded"),
        (2, "Rolling update", "ecs_rolling", "succeeded"),
        (3, "Bake", "bake", "succeeded"),
    ]
    assert [s["duration_seconds"] for s in steps] == [0.01, 0.02, 0.03]
    assert steps[0]["outputs"] == {"applied": True, "services": "2 item(s)"}
    assert steps[2]["outputs"] == {"checks": 10, "duration_seconds": 0.03}


def test_the_log_hash_can_be_recomputed_from_the_stored_lines(users, deployment):
    log = download(users["dave"], deployment)["log"]
    # Recomputed here from the rows, following the format the pack documents.
    digest = hashlib.sha256()
    for seq, at, stream, text in (
        LogLine.objects.filter(deployment=deployment)
        .order_by("seq")
        .values_list("seq", "at", "stream", "text")
    ):
        stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        digest.update((json.dumps([seq, stamp, stream, text], separators=(",", ":"),
                                  ensure_ascii=False) + "\n").encode("utf-8"))  # fmt: skip
    assert log["sha256"] == digest.hexdigest()
    # And from the pack alone, as docs/ARCHITECTURE.md tells an auditor to.
    again = hashlib.sha256()
    for line in log["lines"]:
        row = [line["seq"], line["at"], line["stream"], line["text"]]
        again.update((json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n").encode())
    assert again.hexdigest() == log["sha256"]
    assert log["line_count"] == len(LOG)
    assert [(line["stream"], line["text"]) for line in log["lines"]] == LOG
    assert log["lines"][2]["step"] == "Bake"
    assert "SHA-256 over the UTF-8 bytes" in log["canonical_format"]


def test_the_log_hash_changes_with_any_line(users, deployment):
    before = download(users["dave"], deployment)["log"]["sha256"]
    LogLine.objects.filter(deployment=deployment, seq=2).update(text="fraud-api: stable")
    assert download(users["dave"], deployment)["log"]["sha256"] != before


def test_it_shows_the_alarms_that_changed_during_the_bake(users, deployment):
    history = alarm_history(deployment)
    alarms = download(users["dave"], deployment)["alarms_during_bake"]
    assert alarms["baked"] is True
    assert [(t["alarm"], t["from_state"], t["to_state"]) for t in alarms["transitions"]] == [
        ("HighErrorRate", "OK", "ALARM"),
        ("HighErrorRate", "ALARM", "OK"),
    ]
    assert alarms["transitions"][0]["source"] == "alertmanager"
    assert alarms["transitions"][0]["at"] == history["fired"].at.isoformat(timespec="microseconds")


def test_it_lists_the_audit_events_with_their_chain_position(users, deployment):
    stored = list(
        AuditEvent.objects.filter(
            target_type="deployments.deployment", target_id=str(deployment.pk)
        )
        .order_by("seq")
        .values_list(*CHAIN_FIELDS)
    )
    audit = download(users["dave"], deployment)["audit"]
    assert [e["seq"] for e in audit["events"]] == [row[0] for row in stored]
    assert [e["action"] for e in audit["events"]][:3] == [
        "deployment.requested", "deployment.planned", "deployment.awaiting_approval"
    ]  # fmt: skip
    for event, row in zip(audit["events"], stored, strict=True):
        assert (event["prev_hash"], event["hash"]) == (row[14], row[15])
        # Every field the HMAC covers is in the pack: re-signing it gives the hash.
        at = row[1]
        assert event["at"] == at.astimezone(UTC).isoformat(timespec="microseconds")
        fields = [event[name] for name in CHAIN_FIELDS[:15]]
        fields[1] = at
        assert sign(canonical(*fields)) == event["hash"]
        assert event["signature_ok"] and event["link_ok"]
    assert audit["verification"]["these_events_ok"] is True
    assert audit["verification"]["problems"] == []


def test_a_tampered_event_fails_verification_in_the_pack(users, deployment):
    approved = AuditEvent.objects.filter(
        action="deployment.approved", target_id=str(deployment.pk)
    ).order_by("seq").first()  # fmt: skip
    tamper("UPDATE portal_auditevent SET actor_name = %s WHERE seq = %s", ["mallory", approved.seq])
    audit = download(users["dave"], deployment)["audit"]
    broken = next(e for e in audit["events"] if e["seq"] == approved.seq)
    assert broken["signature_ok"] is False
    assert audit["verification"]["these_events_ok"] is False
    assert audit["verification"]["problems"] == [
        f"event #{approved.seq} does not match its signature (edited or re-signed)"
    ]
    html = browser(users["dave"]).get(html_url(deployment)).content.decode()
    assert "do NOT verify" in html
    assert "signature fails" in html


def test_a_relinked_event_fails_its_link_check(users, deployment):
    started = AuditEvent.objects.get(action="deployment.started", target_id=str(deployment.pk))
    tamper("UPDATE portal_auditevent SET hash = %s WHERE seq = %s", ["0" * 64, started.seq - 1])
    audit = download(users["dave"], deployment)["audit"]
    event = next(e for e in audit["events"] if e["seq"] == started.seq)
    assert (event["signature_ok"], event["link_ok"]) == (True, False)
    # The event before it (the queueing) is this deployment's too: its own hash is wrong.
    assert audit["verification"]["problems"] == [
        f"event #{started.seq - 1} does not match its signature (edited or re-signed)",
        f"event #{started.seq} does not link to the hash of event #{started.seq - 1}",
    ]


def test_it_includes_the_latest_chain_verification(users, deployment):
    assert download(users["dave"], deployment)["audit"]["verification"]["chain"] is None
    verify_audit_chain()
    chain = download(users["dave"], deployment)["audit"]["verification"]["chain"]
    # The check ran before that download's own export event; it covers the deployment's
    # events as they were when it ran.
    last = AuditEvent.objects.filter(action="evidence.exported").order_by("seq").first()
    assert chain["ok"] is True
    assert chain["verified_through_seq"] == last.seq
    assert chain["covers_these_events"] is True


def test_the_export_is_audited(users, deployment):
    pack = download(users["dave"], deployment)
    event = last_event("evidence.exported")
    assert event.actor_name == "dave"
    assert event.target_id == str(deployment.pk)
    assert event.environment_id == deployment.environment_id
    assert event.after == {"format": "json", "log_sha256": pack["log"]["sha256"]}
    browser(users["dave"]).get(html_url(deployment))
    assert last_event("evidence.exported").after["format"] == "html"


def test_the_html_page_is_self_contained_and_escaped(users, deployment):
    Deployment.objects.filter(pk=deployment.pk).update(reason="<script>alert(1)</script>")
    LogLine.objects.filter(deployment=deployment, seq=1).update(text="<img src=x onerror=alert(2)>")
    response = browser(users["dave"]).get(html_url(deployment))
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'inline; filename="deployment-{deployment.pk}-evidence.html"'
    )
    html = response.content.decode()
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    # The one link is an empty icon, inline, so a browser fetches no /favicon.ico.
    assert re.findall(r"<link[^>]*>", html, re.IGNORECASE) == ['<link rel="icon" href="data:,">']
    assert "<style>" in html
    for text in (
        PLAN_SHA,
        deployment.approval_digest(),
        "Bob Okafor",
        "bob@example.com",
        build_pack(deployment)["log"]["sha256"],
        "fraud-ml",
        "aws_nat_gateway.main[1]",
    ):
        assert text in html, text  # fmt: skip


@pytest.mark.parametrize("url", [json_url, html_url])
def test_an_outsider_gets_a_404(users, deployment, url):
    assert browser(users["mallory"]).get(url(deployment)).status_code == 404
    assert last_event("evidence.exported") is None


@pytest.mark.parametrize("url", [json_url, html_url])
def test_anonymous_users_are_sent_to_sign_in(client, deployment, url):
    response = client.get(url(deployment))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("url", [json_url, html_url])
def test_it_refuses_a_post(users, deployment, url):
    assert browser(users["dave"]).post(url(deployment)).status_code == 405


@pytest.mark.parametrize("url", [json_url, html_url])
def test_a_head_request_records_no_export(users, deployment, url):
    assert browser(users["dave"]).head(url(deployment)).status_code == 405
    assert last_event("evidence.exported") is None


def test_a_viewer_of_another_environment_gets_a_404(users, deployment, catalog):
    from portal.core.models import Membership

    Membership.objects.filter(user=users["dave"], environment=deployment.environment).delete()
    assert browser(users["dave"]).get(json_url(deployment)).status_code == 404


def test_the_pack_costs_a_constant_number_of_queries(users, deployment):
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as before:
        build_pack(Deployment.objects.get(pk=deployment.pk))
    LogLine.objects.bulk_create(
        LogLine(deployment=deployment, seq=seq, text=f"line {seq}") for seq in range(10, 500)
    )
    for _ in range(5):
        download(users["dave"], deployment)  # more audit events of this deployment
    with CaptureQueriesContext(connection) as after:
        build_pack(Deployment.objects.get(pk=deployment.pk))
    assert len(after) == len(before)


def test_it_reports_a_break_found_by_the_scheduled_check(users, deployment):
    registered = AuditEvent.objects.get(action="release.registered")
    tamper("UPDATE portal_auditevent SET actor_name = %s WHERE seq = %s", ["eve", registered.seq])
    verify_audit_chain()
    verification = download(users["dave"], deployment)["audit"]["verification"]
    # This deployment's own events still hold; the chain before them does not.
    assert verification["these_events_ok"] is True
    assert verification["chain"]["ok"] is False
    assert verification["chain"]["broken_seq"] == registered.seq
    assert verification["chain"]["covers_these_events"] is False
    html = browser(users["dave"]).get(html_url(deployment)).content.decode()
    assert f"BROKEN at event #{registered.seq}</span>" in html


def test_it_names_the_run_that_satisfied_the_promotion_rule(users, deployment):
    section = download(users["dave"], deployment)["deployment"]
    staging_run = deployment.promoted_from
    assert section["promoted_from"]["id"] == staging_run.pk
    assert section["promoted_from"]["environment"] == "staging"
    assert section["freeze_override"] is None
