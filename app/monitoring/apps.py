from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "app.monitoring"
    label = "monitoring"
    verbose_name = "Model monitoring"

    def ready(self) -> None:
        # Registers the recorder's shutdown flush now, before app.serving.runtime registers the pool's
        # drain: hooks run in reverse order, so requests that finish while the pool drains still get
        # written.
        # Imported here, not at the top: models may only be imported once the app registry is ready.
        from realtime import bus

        from . import metrics, recording  # noqa: F401

        bus.set_observer(metrics.PrometheusBusObserver())
