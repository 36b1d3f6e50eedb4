from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "app.datasets"
    label = "datasets"
    verbose_name = "Datasets"
