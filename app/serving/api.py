from typing import Any

from ninja import Query, Schema
from ninja_extra import api_controller, route
from pydantic import Field

from app.api.auth import Controller, bearer_auth
from app.api.openapi import errors
from app.api.schemas import Input
from app.monitoring import recording

from . import calls, catalog, livestats, runtime


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


class LivePointOut(Schema):
    t: int = Field(description="The second (Unix time) the figures cover")
    processes: int = Field(description="Serving processes that had traffic in that second")
    requests_per_s: int
    p50_ms: float | None = Field(description="Median submit-to-answer time of the successful requests")
    p99_ms: float | None
    queue_depth: int = Field(description="Most rows waiting for a batch at once, summed over processes")
    batches_per_s: int
    rows_per_s: int
    mean_batch_size: float | None = Field(description="Rows per forward pass")
    busy_share: float = Field(description="Share of the second the runners spent in forward passes (per process)")
    effective_max_batch_size: int | None = Field(description="Rows per pass the batchers allowed at last tuning")
    errors: dict[str, int] = Field(description="Failed calls by error code")
    rejections: dict[str, int] = Field(description="Requests the batchers refused or dropped, by reason")


class LiveStatsOut(Schema):
    model: str
    topic: str = Field(description="Where the same points arrive live (websocket /ws/v1/events, type serving.stats)")
    points: list[LivePointOut] = Field(description="Oldest first; a second without traffic has no point")


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

    @route.get("/{name}/stats/live", response=LiveStatsOut,
               summary="Serving figures per second over every serving process, for the last minutes")
    async def live_stats(self, name: str, minutes: int = Query(5, ge=1, le=60)) -> dict[str, Any]:
        info = await catalog.model_for(self.caller, name)
        points = await livestats.series(model=info.name, seconds=minutes * 60)
        return {"model": info.name, "topic": livestats.topic(info.name), "points": points}
