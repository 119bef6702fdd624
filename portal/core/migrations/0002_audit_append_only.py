"""The database itself refuses UPDATE and DELETE on the audit trail."""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION portal_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER portal_auditevent_no_update BEFORE UPDATE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_auditevent_append_only();
CREATE TRIGGER portal_auditevent_no_delete BEFORE DELETE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_auditevent_append_only();
"""
PG_REVERSE = """
DROP TRIGGER IF EXISTS portal_auditevent_no_update ON portal_auditevent;
DROP TRIGGER IF EXISTS portal_auditevent_no_delete ON portal_auditevent;
DROP FUNCTION IF EXISTS portal_auditevent_append_only();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER portal_auditevent_no_update BEFORE UPDATE ON portal_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER portal_auditevent_no_delete BEFORE DELETE ON portal_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END;""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS portal_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_delete;",
]


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
    dependencies = [("portal", "0001_initial")]
    operations = [migrations.RunPython(forward, reverse)]
