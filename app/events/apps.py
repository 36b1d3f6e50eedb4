from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "app.events"
    label = "events"
    verbose_name = "Events outbox"
