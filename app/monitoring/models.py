"""Model monitoring rows: per-model settings, sampled predictions with their feedback, per-minute request
aggregates and drift reports. docs/monitoring.md describes how they are filled and read."""

from __future__ import annotations

from django.db import models

# Upper bounds (ms) of the request latency histogram; one more bucket counts what is above the last.
LATENCY_EDGES_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000,
)

class Task(models.TextChoices):
    CLASSIFICATION = "classification", "Classification"
    REGRESSION = "regression", "Regression"


class InputKind(models.TextChoices):
    RECORDS = "records", "Raw JSON records"
    TENSORS = "tensors", "Tensors"


class MonitoringConfig(models.Model):
    """Per-model overrides; a null field means the setting's default (TORCHWIRE_PREDICTION_SAMPLE_RATE,
    TORCHWIRE_DRIFT_THRESHOLD), so changing the default moves every model that did not choose."""

    model = models.OneToOneField("registry.MlModel", on_delete=models.CASCADE, related_name="monitoring_config")
    sample_rate = models.FloatField(null=True, blank=True)
    drift_threshold = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of model {self.model_id}"


class PredictionRecord(models.Model):
    """One row of a sampled prediction. A request's rows share ``prediction_id`` and differ by ``row``."""

    model = models.ForeignKey("registry.MlModel", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    prediction_id = models.UUIDField()
    row = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=1)  # rows in the request: feedback must name one when > 1
    protocol = models.CharField(max_length=8)
    kind = models.CharField(max_length=8, choices=InputKind.choices)
    created_at = models.DateTimeField()
    inputs = models.JSONField()
    outputs = models.JSONField()
    truncated = models.BooleanField(default=False)  # tensor rows longer than PREDICTION_MAX_VALUES
    task = models.CharField(max_length=16, choices=Task.choices, blank=True, default="")  # "": not comparable
    label = models.TextField(blank=True, default="")  # the predicted class (classification)
    value = models.FloatField(null=True, blank=True)  # the predicted value (regression)
    latency_ms = models.FloatField()
    feedback = models.JSONField(null=True, blank=True)  # the ground truth as the client sent it
    feedback_at = models.DateTimeField(null=True, blank=True)
    correct = models.BooleanField(null=True, blank=True)  # classification: label == feedback
    error = models.FloatField(null=True, blank=True)  # regression: value - feedback

    class Meta:
        constraints = [models.UniqueConstraint(fields=["prediction_id", "row"], name="uniq_prediction_row")]
        indexes = [
            models.Index(fields=["model", "version", "created_at"], name="prediction_model_time"),
            models.Index(fields=["created_at"], name="prediction_time"),
        ]

    def __str__(self) -> str:
        return f"prediction {self.prediction_id}[{self.row}]"


class RequestStats(models.Model):
    """Every request of one minute for (model, version, protocol), as counted by one serving process
    (``source``). Only that process writes its row, so it can store absolute values without a race;
    readers sum the sources."""

    model = models.ForeignKey("registry.MlModel", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    protocol = models.CharField(max_length=8)
    minute = models.DateTimeField()
    source = models.CharField(max_length=128)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    rows = models.PositiveBigIntegerField(default=0)
    statuses = models.JSONField(default=dict)  # error code -> count
    latency_sum_ms = models.FloatField(default=0.0)
    latency_max_ms = models.FloatField(default=0.0)
    latency_buckets = models.JSONField(default=list)  # counts per `LATENCY_EDGES_MS` bucket

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "version", "protocol", "minute", "source"],
                                    name="uniq_request_stats_minute")
        ]
        indexes = [
            models.Index(fields=["model", "minute"], name="request_stats_model_minute"),
            models.Index(fields=["minute"], name="request_stats_minute"),
        ]

    def __str__(self) -> str:
        return f"requests of model {self.model_id} v{self.version} at {self.minute:%Y-%m-%d %H:%M}"


class DriftStatus(models.TextChoices):
    OK = "ok", "No drift"
    DRIFT = "drift", "Drift past the threshold"
    INSUFFICIENT_DATA = "insufficient_data", "Too few recorded records"


class DriftReport(models.Model):
    model = models.ForeignKey("registry.MlModel", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    trigger = models.CharField(max_length=16)  # schedule | api
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    sample_count = models.PositiveIntegerField()
    threshold = models.FloatField()
    status = models.CharField(max_length=24, choices=DriftStatus.choices)
    drifted_features = models.JSONField(default=list)
    features = models.JSONField(default=list)
    predictions = models.JSONField(default=dict)

    class Meta:
        indexes = [
            models.Index(fields=["model", "version", "-created_at"], name="drift_report_model_time"),
            models.Index(fields=["created_at"], name="drift_report_time"),
        ]

    def __str__(self) -> str:
        return f"drift report {self.pk} of model {self.model_id} v{self.version} ({self.status})"
