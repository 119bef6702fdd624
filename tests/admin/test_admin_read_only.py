"""What the admin must not do: touch the audit trail, edit releases, issue tokens."""

from __future__ import annotations

from django.urls import reverse

from deployments.models import Deployment, Release
from environments.models import FreezeOverride
from portal.core import audit, tokens
from portal.core.models import AuditEvent
from tests.conftest import env


def test_it_refuses_to_delete_an_audit_event(admin_client, db):
    event = audit.record("deployment.requested", ("x", 1, "x"))
    url = reverse("admin:portal_auditevent_delete", args=[event.pk])
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    changelist = reverse("admin:portal_auditevent_changelist")
    response = admin_client.post(changelist, {"action": "delete_selected", "post": "yes",
                                              "_selected_action": [event.pk]})  # fmt: skip
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert response.status_code in (200, 302)
    assert not AuditEvent.objects.filter(action__startswith="admin.").exists()


def test_it_shows_but_never_changes_an_audit_event(admin_client, db):
    event = audit.record("deployment.requested", ("x", 1, "x"), after={"reason": "r"})
    url = reverse("admin:portal_auditevent_change", args=[event.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "deployment.requested" in response.content.decode()
    assert admin_client.post(url, {"action": "forged"}).status_code == 403
    assert admin_client.get(reverse("admin:portal_auditevent_add")).status_code == 403
    event.refresh_from_db()
    assert event.action == "deployment.requested"


def test_the_audit_list_does_not_count_a_huge_table(admin_client, db):
    for number in range(3):
        audit.record("note", ("x", number, "x"))
    response = admin_client.get(reverse("admin:portal_auditevent_changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == AuditEvent.objects.count()
    assert response.context["cl"].result_count >= 3


def test_releases_are_read_only(admin_client, release):
    assert admin_client.get(reverse("admin:deployments_release_add")).status_code == 403
    url = reverse("admin:deployments_release_change", args=[release.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "fraud-api" in response.content.decode()  # the artifacts inline
    assert admin_client.post(url, {"version": "9.9.9"}).status_code == 403
    delete = reverse("admin:deployments_release_delete", args=[release.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Release.objects.get(pk=release.pk).version == "1.4.0"


def test_deployments_change_only_through_their_methods(admin_client, release, users, root):
    deployment = Deployment.request(release, env(release.application, "staging"),
                                    users["alice"], "hotfix")  # fmt: skip
    url = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    admin_client.post(url, {"status": "succeeded"})
    deployment.refresh_from_db()
    assert deployment.status == "awaiting_approval"
    changelist = reverse("admin:deployments_deployment_changelist")
    admin_client.post(changelist, {"action": "cancel_requests",
                                   "_selected_action": [deployment.pk]})  # fmt: skip
    deployment.refresh_from_db()
    assert deployment.status == "cancelled"
    assert AuditEvent.objects.filter(action="deployment.cancelled", actor_name="root").exists()


def test_tokens_cannot_be_issued_in_the_admin_and_revoke_is_audited(admin_client, users):
    assert admin_client.get(reverse("admin:portal_apitoken_add")).status_code == 403
    token, key = tokens.issue(users["alice"], "ci")
    url = reverse("admin:portal_apitoken_change", args=[token.pk])
    page = admin_client.get(url).content.decode()
    assert key not in page
    changelist = reverse("admin:portal_apitoken_changelist")
    admin_client.post(changelist, {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert not token.is_active
    assert AuditEvent.objects.filter(action="token.revoked", actor_name="root").exists()


def test_break_glass_decisions_are_read_only_but_can_be_revoked(admin_client, catalog, users):
    production = env(catalog, "production")
    from datetime import timedelta

    override = FreezeOverride.request(production, users["erin"], "incident 42", timedelta(hours=1))
    override.approve(users["bob"])
    url = reverse("admin:environments_freezeoverride_change", args=[override.pk])
    admin_client.post(url, {"status": "pending", "reason": "nothing to see"})
    override.refresh_from_db()
    assert override.reason == "incident 42" and override.status == "active"
    changelist = reverse("admin:environments_freezeoverride_changelist")
    admin_client.post(changelist, {"action": "revoke_overrides",
                                   "_selected_action": [override.pk]})  # fmt: skip
    override.refresh_from_db()
    assert override.status == "revoked"
    event = AuditEvent.objects.filter(action="freeze_override.revoked").get()
    assert event.after == {"status": "revoked"} and event.environment_id == production.pk
