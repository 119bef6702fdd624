"""Every change made through the admin lands in the audit trail, with the
fields before and after, and never a secret in clear."""

from __future__ import annotations

import json

from django.contrib.auth.models import Group, User
from django.urls import reverse

from environments.models import FreezeWindow, Step
from portal.core.choices import Role
from portal.core.models import AuditEvent, Membership
from tests.admin.conftest import admin_form_data
from tests.conftest import env


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("seq")


def change(admin_client, url: str, **changes) -> None:
    data = admin_form_data(admin_client.get(url))
    data.update(changes)
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context and (
        response.context["adminform"].form.errors,
        [f.errors for f in response.context["inline_admin_formsets"][0].formset.forms]
        if response.context["inline_admin_formsets"]
        else None,
    )


def test_it_records_an_environment_policy_change(admin_client, catalog, root):
    production = env(catalog, "production")
    url = reverse("admin:environments_environment_change", args=[production.pk])
    change(admin_client, url, required_approvals="3", approver_group=str(Group.objects.get().pk))
    production.refresh_from_db()
    assert production.required_approvals == 3
    event = last_event("admin.environment.changed")
    assert event.before == {"required_approvals": 2, "approver_group": None}
    assert event.after == {"required_approvals": 3, "approver_group": "risk"}
    assert event.actor_name == "root"
    assert event.environment_id == production.pk
    assert event.application_id == catalog.pk
    assert event.target_repr == "fraud-detector/production"
    assert event.request_id  # tied to the admin request


def test_saving_without_a_change_records_nothing(admin_client, catalog):
    production = env(catalog, "production")
    url = reverse("admin:environments_environment_change", args=[production.pk])
    count = AuditEvent.objects.count()
    change(admin_client, url)
    assert AuditEvent.objects.count() == count


def test_it_never_records_the_webhook_url(admin_client, catalog):
    staging = env(catalog, "staging")
    url = reverse("admin:environments_environment_change", args=[staging.pk])
    secret_url = "https://hooks.slack.example/services/T000/B000/XXXXSECRET"
    change(admin_client, url, webhook_url=secret_url, secret_variables='{"DB_PASSWORD": "hunter2"}')
    staging.refresh_from_db()
    assert staging.webhook_url == secret_url
    assert staging.secret_variables == {"DB_PASSWORD": "hunter2"}
    event = last_event("admin.environment.changed")
    assert event.before == {"webhook_url": "unset", "secret_variables": "unset"}
    assert event.after == {"webhook_url": "set", "secret_variables": "set"}
    # The form never shows them back; an empty box keeps them.
    page = admin_client.get(url).content.decode()
    assert "XXXXSECRET" not in page and "hunter2" not in page
    change(admin_client, url, webhook_url="https://hooks.slack.example/services/NEW")
    event = last_event("admin.environment.changed")
    assert event.before == {"webhook_url": "set"} and event.after == {"webhook_url": "changed"}
    staging.refresh_from_db()
    assert staging.secret_variables == {"DB_PASSWORD": "hunter2"}
    trail = json.dumps(list(AuditEvent.objects.values("before", "after")))
    assert "SECRET" not in trail and "hunter2" not in trail and "NEW" not in trail


def test_it_refuses_a_webhook_url_that_is_not_https(admin_client, catalog):
    staging = env(catalog, "staging")
    url = reverse("admin:environments_environment_change", args=[staging.pk])
    data = admin_form_data(admin_client.get(url))
    data["webhook_url"] = "http://plain.example/hook"
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "webhook_url" in response.context["adminform"].form.errors
    assert not AuditEvent.objects.filter(action="admin.environment.changed").exists()


def test_it_records_inline_step_changes(admin_client, catalog):
    staging = env(catalog, "staging")
    url = reverse("admin:environments_environment_change", args=[staging.pk])
    change(admin_client, url, **{
        "steps-TOTAL_FORMS": "1", "steps-0-order": "1", "steps-0-name": "Smoke test",
        "steps-0-kind": "http_check", "steps-0-config": '{"urls": ["https://staging/health"]}',
    })  # fmt: skip
    step = Step.objects.get(environment=staging)
    event = last_event("admin.step.created")
    assert event.after["name"] == "Smoke test"
    assert event.after["config"] == {"urls": ["https://staging/health"]}
    assert event.environment_id == staging.pk
    change(admin_client, url, **{"steps-0-DELETE": "on"})
    assert not Step.objects.filter(pk=step.pk).exists()
    event = last_event("admin.step.deleted")
    assert event.before["name"] == "Smoke test" and event.after is None
    assert event.target_id == str(step.pk)


def test_it_records_a_role_change(admin_client, catalog, users):
    membership = Membership.objects.get(user=users["dave"], environment=env(catalog, "production"))
    url = reverse("admin:portal_membership_change", args=[membership.pk])
    change(admin_client, url, role=Role.APPROVER)
    event = last_event("admin.membership.changed")
    assert event.before == {"role": "viewer"}
    assert event.after == {"role": "approver"}
    assert event.target_repr == "dave is approver in fraud-detector/production"
    assert event.environment_id == membership.environment_id


def test_it_records_a_granted_and_a_revoked_role(admin_client, catalog, users):
    production = env(catalog, "production")
    url = reverse("admin:portal_membership_add")
    data = {"user": users["mallory"].pk, "environment": production.pk, "role": Role.ADMIN}
    assert admin_client.post(url, data).status_code == 302
    event = last_event("admin.membership.created")
    assert event.before is None
    assert event.after == {"user": "mallory", "environment": "fraud-detector/production",
                           "role": "admin"}  # fmt: skip
    membership = Membership.objects.get(user=users["mallory"])
    delete_url = reverse("admin:portal_membership_delete", args=[membership.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    event = last_event("admin.membership.deleted")
    assert event.before["role"] == "admin" and event.after is None
    assert event.target_id == str(membership.pk)
    assert event.environment_id == production.pk


def test_bulk_deletes_are_recorded_one_by_one(admin_client, catalog):
    staging = env(catalog, "staging")
    windows = [
        FreezeWindow.objects.create(environment=staging, kind="weekly", reason=f"freeze {n}",
                                    start_weekday=4, start_time="18:00", end_weekday=0,
                                    end_time="06:00")
        for n in range(2)
    ]  # fmt: skip
    url = reverse("admin:environments_freezewindow_changelist")
    response = admin_client.post(url, {"action": "delete_selected", "post": "yes",
                                       "_selected_action": [w.pk for w in windows]})  # fmt: skip
    assert response.status_code == 302
    assert not FreezeWindow.objects.exists()
    events = AuditEvent.objects.filter(action="admin.freezewindow.deleted")
    assert sorted(e.before["reason"] for e in events) == ["freeze 0", "freeze 1"]


def test_it_records_user_changes_without_the_password_hash(admin_client, db):
    risk = Group.objects.create(name="risk")
    response = admin_client.post(reverse("admin:auth_user_add"), {
        "username": "frank", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9",
        "usable_password": "true",
    })  # fmt: skip
    assert response.status_code == 302
    frank = User.objects.get(username="frank")
    event = last_event("admin.user.created")
    assert event.after["username"] == "frank"
    assert event.after["password"] == "set"
    url = reverse("admin:auth_user_change", args=[frank.pk])
    change(admin_client, url, groups=[str(risk.pk)], is_staff="on")
    event = last_event("admin.user.changed")
    # (date_joined may appear too: the admin form drops its microseconds.)
    assert {k: event.before[k] for k in ("groups", "is_staff")} == {"groups": [], "is_staff": False}
    assert {k: event.after[k] for k in ("groups", "is_staff")} == {
        "groups": ["risk"],
        "is_staff": True,
    }
    password_url = reverse("admin:auth_user_password_change", args=[frank.pk])
    response = admin_client.post(password_url, {"password1": "another-passphrase-7",
                                                "password2": "another-passphrase-7",
                                                "usable_password": "true"})  # fmt: skip
    assert response.status_code == 302
    event = last_event("admin.user.password_changed")
    assert event.after == {"password": "changed"}
    trail = json.dumps(list(AuditEvent.objects.values("before", "after")))
    assert "md5$" not in trail and "pbkdf2" not in trail and "passphrase" not in trail


def test_staff_without_permissions_cannot_change_anything(client, catalog, users):
    dave = users["dave"]
    dave.is_staff = True
    dave.save()
    client.force_login(dave)
    production = env(catalog, "production")
    url = reverse("admin:environments_environment_change", args=[production.pk])
    assert client.post(url, {"required_approvals": "0"}).status_code == 403
    production.refresh_from_db()
    assert production.required_approvals == 2
    assert not AuditEvent.objects.filter(action__startswith="admin.").exists()


def test_it_sends_anonymous_users_to_the_admin_sign_in(client, catalog):
    response = client.get(reverse("admin:environments_environment_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response.url
