from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private"
    SHARED = "shared", "Shared with listed users"
    PUBLIC = "public", "Public to every user"


class Stage(models.TextChoices):
    NONE = "none", "None"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class ArtifactFormat(models.TextChoices):
    SAFETENSORS = "safetensors", "safetensors + architecture"
    TORCHSCRIPT = "torchscript", "TorchScript"
    TORCH_EXPORT = "torch_export", "torch.export (.pt2)"


class MlModel(models.Model):
    """A named model; its versions hold the artifacts. Serving config applies to every version."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="models")
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_models")

    max_batch_size = models.PositiveIntegerField(default=32)
    max_delay_ms = models.FloatField(default=5.0)
    max_queue = models.PositiveIntegerField(default=1024)
    timeout_ms = models.PositiveIntegerField(default=10000)
    device = models.CharField(max_length=16, default="auto")
    # "" follows the deployment's TORCHWIRE_DISPATCH_POLICY; else "adaptive" or "fixed" (docs/batching.md).
    dispatch_policy = models.CharField(max_length=16, blank=True, default="")
    # When set, the batcher tunes its effective batch size and delay to keep its p99 latency under this.
    target_p99_ms = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    model = models.ForeignKey(MlModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    format = models.CharField(max_length=16, choices=ArtifactFormat.choices)
    architecture = models.CharField(max_length=64, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    signature = models.JSONField()
    artifact_key = models.CharField(max_length=512)
    artifact_sha256 = models.CharField(max_length=64)
    artifact_size = models.BigIntegerField()
    # Extra files beside the weights (a training job's feature pipeline, reference statistics).
    extras = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.NONE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="model_versions"
    )
    source_job_id = models.BigIntegerField(null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model", "number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="uniq_model_version_number"),
            models.UniqueConstraint(
                fields=["model"], condition=Q(stage="production"), name="one_production_version_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.number}"


class StageChange(models.Model):
    """One stage change of a version, written in the transaction that made it (promotion, rollback, or
    the archiving of the production version another promotion replaced). Rows are never updated."""

    class Action(models.TextChoices):
        PROMOTE = "promote", "Promotion"
        REPLACED = "replaced", "Replaced in production by a promotion"
        ROLLBACK = "rollback", "Rollback"
        BACKFILL = "backfill", "Recorded from the stage a version had when history began"

    model = models.ForeignKey(MlModel, on_delete=models.CASCADE, related_name="stage_changes")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="stage_changes")
    from_stage = models.CharField(max_length=16, choices=Stage.choices)
    to_stage = models.CharField(max_length=16, choices=Stage.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        ordering = ["model", "id"]
        indexes = [models.Index(fields=["model", "-id"], name="stage_change_model_recent")]

    def __str__(self) -> str:
        return f"{self.model_id}:{self.version_id} {self.from_stage}->{self.to_stage}"
