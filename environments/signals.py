"""Dashboard cards of changes made outside the engine.

The engine calls environment_changed (environments/live.py) wherever it
changes what a card shows. Edits through the admin or the ORM (an
environment's name or budget, its steps, an alarm, a cost figure, a
deployment created or edited by hand) reach no such call: these receivers
make it, so the card is built again (and open dashboards told) once the edit
commits, instead of the kept one being served. Several edits of one
environment in one transaction make one call. Queryset `update()` and
`bulk_create()` send no signals; code that uses them on these models calls
environment_changed itself.
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from environments.live import environment_changed

# Models with an environment_id whose rows a card shows.
BY_ENVIRONMENT = (
    "environments.Step",
    "environments.Alarm",
    "environments.CostSnapshot",
    "deployments.Deployment",
)


def _environment_edited(sender, instance, **kwargs) -> None:
    environment_changed(instance.pk, "edited")


def _row_edited(sender, instance, **kwargs) -> None:
    environment_changed(instance.environment_id, "edited")


def _application_edited(sender, instance, **kwargs) -> None:
    # Cards show the application's slug in their links.
    for pk in instance.environments.values_list("pk", flat=True):
        environment_changed(pk, "edited")


def connect() -> None:
    for signal, name in ((post_save, "save"), (post_delete, "delete")):
        signal.connect(_environment_edited, sender="environments.Environment",
                       dispatch_uid=f"card-environment-{name}")  # fmt: skip
        signal.connect(_application_edited, sender="environments.Application",
                       dispatch_uid=f"card-application-{name}")  # fmt: skip
        for model in BY_ENVIRONMENT:
            signal.connect(_row_edited, sender=model, dispatch_uid=f"card-{model}-{name}")
