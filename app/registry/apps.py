from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "app.registry"
    label = "registry"
    verbose_name = "Model registry"
