from django.contrib import admin
from django.urls import path

from app.api.v1 import api
from app.core.health import healthz, readyz
from app.monitoring.views import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
]
