from typing import Any

from ninja import Schema
from ninja_extra import api_controller, route
from pydantic import Field

from app.api.auth import Controller, bearer_auth
from app.api.openapi import errors
from app.api.schemas import Input
from app.monitoring import recording

from . import calls, catalog, runtime


class PredictIn(Input):
    inputs: Any = Field(description="A nested list (single-input models) or an object of input name -> nested list")


class PredictOut(Schema):
    model: str
    version: int
    prediction_id: str = Field(description="Names this prediction for feedback; row i of a batch is (prediction_id, i)")
    outputs: Any
    timing: dict[str, float]


class BatchingOut(Schema):
    version: int
    dispatch_policy: str
    max_batch_size: int
    max_delay_ms: float
    target_p99_ms: float | None
    effective_max_batch_size: int = Field(description="Rows per pass in force (tuned below the maximum under a target)")
    effective_max_delay_ms: float = Field(description="Longest wait for company in force")
    p99_ms: float | None = Field(description="p99 of submit-to-result over the last measuring window")
    queued_rows: int
    arrival_rows_per_s: float
    mean_batch_rows: float | None
    compute_ms: dict[str, float] | None = Field(description="Fitted forward-pass cost: fixed + per_row * rows")


class StatsOut(Schema):
    model: str
    process: str = Field(description="The serving process that answered: each one batches and tunes on its own")
    versions: list[BatchingOut]


@api_controller("/models", tags=["inference"], auth=bearer_auth)
class PredictController(Controller):
    """Documents the route and serves it when the fast path (`app.serving.fastpath`) is switched off."""

    @route.post("/{name}/predict", response={200: PredictOut, **errors(403, 429, 503, 504)},
                summary="Run a model on JSON inputs (batched)")
    async def predict(self, name: str, payload: PredictIn, version: calls.VersionQuery | None = None) -> dict[str, Any]:
        timeout_ms = calls.timeout_ms_from_header(self.http_request.headers.get("X-Request-Timeout-Ms"))
        priority = calls.priority_from_header(self.http_request.headers.get("X-Priority"))
        return await calls.predict(self.caller, name, version, payload.inputs, timeout_ms=timeout_ms,
                                   size=len(self.http_request.body), priority=priority)

    @route.get("/{name}/stats", response=StatsOut, summary="The batchers of this model's loaded versions, live")
    async def stats(self, name: str) -> dict[str, Any]:
        info = await catalog.model_for(self.caller, name)
        return {"model": info.name, "process": recording.source(), "versions": runtime.batching_stats(info.name)}
