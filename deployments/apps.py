from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"

    def ready(self) -> None:
        # Importing the module connects its receiver: alarms, budgets and the
        # audit chain announce news from below; this app delivers it.
        from deployments import notifications  # noqa: F401
