"""Separation of duties in the database, as the four-eyes rule of 0003 is:
where an environment says implementers may not approve, no decision on a
deployment can be recorded by whoever registered its release or by the user
its commit author names, whatever code path inserts it. Also the approval's
record of how the approver authenticated, and the release's commit author."""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


# SQLite rebuilds deployments_approval to add the columns below, which drops
# its triggers: the four-eyes trigger of 0003 is made again after it.
four_eyes = importlib.import_module("deployments.migrations.0003_requester_never_approves")

PG_FORWARD = """
CREATE OR REPLACE FUNCTION deployments_approval_not_implementer() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM deployments_deployment d
               JOIN environments_environment e ON e.id = d.environment_id
               JOIN deployments_release r ON r.id = d.release_id
               WHERE d.id = NEW.deployment_id AND e.implementers_may_not_approve
                 AND (r.created_by_id = NEW.user_id OR r.commit_author_user_id = NEW.user_id)) THEN
        RAISE EXCEPTION 'an implementer of the release of deployment % may not decide on it',
            NEW.deployment_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER deployments_approval_not_implementer BEFORE INSERT OR UPDATE ON deployments_approval
    FOR EACH ROW EXECUTE FUNCTION deployments_approval_not_implementer();
"""
PG_REVERSE = """
DROP TRIGGER IF EXISTS deployments_approval_not_implementer ON deployments_approval;
DROP FUNCTION IF EXISTS deployments_approval_not_implementer();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER deployments_approval_not_implementer BEFORE INSERT ON deployments_approval
       WHEN EXISTS (SELECT 1 FROM deployments_deployment d
                    JOIN environments_environment e ON e.id = d.environment_id
                    JOIN deployments_release r ON r.id = d.release_id
                    WHERE d.id = NEW.deployment_id AND e.implementers_may_not_approve
                      AND (r.created_by_id = NEW.user_id
                           OR r.commit_author_user_id = NEW.user_id))
       BEGIN SELECT RAISE(ABORT, 'an implementer of a release may not decide on it'); END;""",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS deployments_approval_not_implementer;"]


def sqlite_four_eyes_again(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS deployments_approval_not_requester")
        for statement in four_eyes.SQLITE_FORWARD:
            schema_editor.execute(statement)


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0010_cost_estimate_recorded'),
        ('environments', '0004_approval_identity_policies'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, sqlite_four_eyes_again),
        migrations.AddField(
            model_name='approval',
            name='auth_detail',
            field=models.JSONField(blank=True, default=dict, help_text='amr, acr from the IdP.'),
        ),
        migrations.AddField(
            model_name='approval',
            name='auth_method',
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name='approval',
            name='authenticated_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='approval',
            name='rules',
            field=models.JSONField(blank=True, default=list, help_text='The rules the approver was checked against.'),
        ),
        migrations.AddField(
            model_name='release',
            name='commit_author',
            field=models.CharField(blank=True, max_length=254),
        ),
        migrations.AddField(
            model_name='release',
            name='commit_author_user',
            field=models.ForeignKey(blank=True, help_text='The Gantry user commit_author names (by user name or unique e-mail).', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunPython(sqlite_four_eyes_again, migrations.RunPython.noop),
        migrations.RunPython(forward, reverse),
    ]
