from django.contrib import admin
from django.urls import path

from app.api.v1 import api
from app.core.health import healthz, readyz
from app.monitoring.views import metrics_view
from app.serving import v2_views as v2

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("v2/health/live", v2.health_live),
    path("v2/health/ready", v2.health_ready),
    path("v2", v2.server_metadata),
    path("v2/models/<str:name>", v2.model_metadata),
    path("v2/models/<str:name>/ready", v2.model_ready),
    path("v2/models/<str:name>/infer", v2.model_infer),
    path("v2/models/<str:name>/versions/<str:version>", v2.model_metadata),
    path("v2/models/<str:name>/versions/<str:version>/ready", v2.model_ready),
    path("v2/models/<str:name>/versions/<str:version>/infer", v2.model_infer),
    path("admin/", admin.site.urls),
]
