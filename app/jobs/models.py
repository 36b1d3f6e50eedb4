from __future__ import annotations

from django.conf import settings
from django.db import models


class JobKind(models.TextChoices):
    TRAIN = "train", "Training"
    BATCH_PREDICT = "batch_predict", "Batch prediction"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Job(models.Model):
    """The source of truth for a job. A worker may run it only while it holds the lease
    (``lease_owner`` until ``lease_expires_at``); an expired lease means the worker vanished."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    params = models.JSONField(default=dict)
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    request_id = models.CharField(max_length=128, blank=True, default="")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True)
    model = models.ForeignKey("registry.MlModel", on_delete=models.SET_NULL, null=True, blank=True)
    output_key = models.CharField(max_length=512, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "lease_expires_at"]), models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.state})"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def checkpoint_key(self) -> str:
        """Where a training attempt keeps its latest checkpoint (app/jobs/checkpoints.py)."""
        return f"jobs/{self.pk}/checkpoint.pt"


class JobEvent(models.Model):
    """Lifecycle events of a job (queued, started and the terminal one), kept so history outlives Redis.
    Epoch and log events live only in the Redis event log."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "id"]

    def __str__(self) -> str:
        return f"{self.type} of job {self.job_id}"


class JobMetric(models.Model):
    """One training epoch's figures (`inference.training.EpochReport`), written with the job's progress in
    the same transaction, once per epoch: a finished job's curves load from here, not the event log."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metrics")
    epoch = models.PositiveIntegerField()
    # None where training produced a non-finite number (JSON has no NaN).
    train_loss = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    metric_name = models.CharField(max_length=32)
    metric = models.FloatField(null=True)
    elapsed_s = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "epoch"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="uniq_job_metric_epoch")]

    def __str__(self) -> str:
        return f"epoch {self.epoch} of job {self.job_id}"
