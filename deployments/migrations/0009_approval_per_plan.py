"""One decision per person on each plan of a deployment, not one per
deployment: when a stale plan is made again (a new digest), the approvers
decide again on what will now ship."""

import importlib

from django.conf import settings
from django.db import migrations, models

# SQLite applies a constraint change by rebuilding the table, which drops the
# table's triggers: the four-eyes trigger of 0003 is made again after it.
four_eyes = importlib.import_module("deployments.migrations.0003_requester_never_approves")


def sqlite_four_eyes_again(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS deployments_approval_not_requester")
        for statement in four_eyes.SQLITE_FORWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0008_logline_natural_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    # The trigger is made again after the rebuilds, forward and backward alike.
    operations = [
        migrations.RunPython(migrations.RunPython.noop, sqlite_four_eyes_again),
        migrations.RemoveConstraint(model_name="approval", name="approval_one_per_user"),
        migrations.AddConstraint(
            model_name="approval",
            constraint=models.UniqueConstraint(
                fields=("deployment", "user", "digest"), name="approval_one_per_user_and_plan"
            ),
        ),
        migrations.RunPython(sqlite_four_eyes_again, migrations.RunPython.noop),
    ]
