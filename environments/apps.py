from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    name = "environments"

    def ready(self) -> None:
        from environments import signals

        signals.connect()  # dashboard cards rebuilt after admin and ORM edits
