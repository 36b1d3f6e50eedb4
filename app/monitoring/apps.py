from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "app.monitoring"
    label = "monitoring"
    verbose_name = "Model monitoring"

    def ready(self) -> None:
        # Imported here, not at the top: models may only be imported once the app registry is ready.
        # recording registers its sample-rate listener (app.core.invalidation) on import, in every process.
        from realtime import bus

        from . import metrics, recording  # noqa: F401

        bus.set_observer(metrics.PrometheusBusObserver())
