from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "app.events"
    label = "events"
    verbose_name = "Events outbox"

    def ready(self) -> None:
        # Registers the relay's lifespan hooks (they run only in ASGI processes).
        from . import relay  # noqa: F401
