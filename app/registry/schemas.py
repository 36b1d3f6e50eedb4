from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import Field

from app.api.schemas import Input

from .services import NAME_RE


class ModelCreateIn(Input):
    # Anchored here: a JSON Schema (and pydantic) pattern is a search; ``$`` is the end of the text in both.
    name: str = Field(min_length=1, max_length=64, pattern=f"^{NAME_RE.pattern}$")
    description: str = Field(default="", max_length=10_000)
    visibility: Literal["private", "shared", "public"] = "private"


class ModelPatchIn(Input):
    description: str | None = Field(default=None, max_length=10_000)
    visibility: Literal["private", "shared", "public"] | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_delay_ms: float | None = Field(default=None, ge=0, le=1000)
    max_queue: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout_ms: int | None = Field(default=None, ge=1, le=600_000)
    # pydantic (Rust regex) and OpenAPI (ECMA) read `$` as the end of the text, unlike Python's `re`.
    device: str | None = Field(default=None, pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")
    dispatch_policy: Literal["adaptive", "fixed", "default"] | None = Field(
        default=None, description="How a batch closes: adaptive, fixed (waits max_delay_ms), or the deployment default")
    target_p99_ms: float | None = Field(
        default=None, gt=0, le=600_000, strict=True,
        description="Batcher latency target: the effective batch size and delay are tuned to keep p99 under it; "
                    "null clears it")
    sharing: list[str] | None = Field(default=None, max_length=1000)


class ServingOut(Schema):
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    timeout_ms: int
    device: str
    dispatch_policy: str
    target_p99_ms: float | None


class ModelOut(Schema):
    name: str
    description: str
    owner: str
    visibility: str
    sharing: list[str]
    serving: ServingOut
    production_version: int | None
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


class VersionOut(Schema):
    model: str
    version: int
    format: str
    architecture: str
    config: dict[str, Any]
    signature: dict[str, Any]
    stage: str
    artifact_sha256: str
    artifact_size: int
    metrics: dict[str, Any]
    created_by: str | None
    source_job_id: int | None = Field(description="The training job that produced this version, if any")
    created_at: datetime
    promoted_at: datetime | None


class PromoteIn(Input):
    stage: Literal["staging", "production", "archived"]
    reason: str = Field(default="", max_length=500, description="Why; kept in the promotion history")


class StageChangeOut(Schema):
    id: int
    version: int
    from_stage: str
    to_stage: str
    action: str = Field(description="promote, replaced (archived by another's promotion), rollback or backfill")
    actor: str | None
    reason: str
    at: datetime


class RollbackIn(Schema):
    reason: str = Field(default="", max_length=500)


class RollbackOut(Schema):
    model: str
    version: int = Field(description="The version now in production")
    from_version: int | None = Field(description="The version that was in production before the rollback")
    changes: list[StageChangeOut]


class TensorSpecOut(Schema):
    name: str
    dtype: str = Field(description="safetensors dtype code: F32, F64, F16, BF16, I64, ...")
    shape: list[int]


class ArchitectureOut(Schema):
    name: str
    config_schema: dict[str, Any] = Field(description="JSON Schema of the architecture's config")


class ArchitecturesOut(Schema):
    architectures: list[ArchitectureOut]


class StateDictOut(Schema):
    architecture: str
    config: dict[str, Any] = Field(description="The config with defaults filled in")
    tensors: list[TensorSpecOut]
    signature: dict[str, Any] | None = Field(description="The default signature, when the architecture has one")


class StateDictIn(Schema):
    config: dict[str, Any] = Field(default_factory=dict)
