from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The base every other app stands on: roles, API tokens, the audit trail,
    field encryption. The label stays "portal" (its tables and migration
    history predate the package)."""

    name = "portal.core"
    label = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        # Importing the module connects the sign-in audit receivers.
        from portal.core import lookups, signals  # noqa: F401

        lookups.register()
