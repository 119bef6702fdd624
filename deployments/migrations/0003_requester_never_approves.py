"""Defence in depth for the four-eyes rule: even a bug or a raw INSERT cannot
record an approval by the person who requested the deployment."""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION deployments_approval_not_requester() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM deployments_deployment d
               WHERE d.id = NEW.deployment_id AND d.requested_by_id = NEW.user_id) THEN
        RAISE EXCEPTION 'the requester of deployment % may not decide on it', NEW.deployment_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER deployments_approval_not_requester BEFORE INSERT OR UPDATE ON deployments_approval
    FOR EACH ROW EXECUTE FUNCTION deployments_approval_not_requester();
"""
PG_REVERSE = """
DROP TRIGGER IF EXISTS deployments_approval_not_requester ON deployments_approval;
DROP FUNCTION IF EXISTS deployments_approval_not_requester();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER deployments_approval_not_requester BEFORE INSERT ON deployments_approval
       WHEN EXISTS (SELECT 1 FROM deployments_deployment d
                    WHERE d.id = NEW.deployment_id AND d.requested_by_id = NEW.user_id)
       BEGIN SELECT RAISE(ABORT, 'the requester of a deployment may not decide on it'); END;""",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS deployments_approval_not_requester;"]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("deployments", "0002_initial")]
    operations = [migrations.RunPython(forward, reverse)]
