from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import Field


class ModelCreateIn(Schema):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=10_000)
    visibility: Literal["private", "shared", "public"] = "private"


class ModelPatchIn(Schema):
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
    created_at: datetime
    promoted_at: datetime | None


class PromoteIn(Schema):
    stage: Literal["staging", "production", "archived"]
