from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from ninja import Query, Schema
from ninja_extra import api_controller, route
from pydantic import ConfigDict, Field

from app.api.auth import Controller, bearer_auth
from app.api.openapi import errors
from app.api.schemas import Input
from app.core.db import db_async
from app.core.errors import NotFound
from app.core.storage import get_storage
from app.registry.services import NAME_RE
from realtime.sse import sse_response

from . import selectors, services
from .models import Job, JobKind, JobState


class Hyperparameters(Input):
    model_config = ConfigDict(extra="forbid")

    hidden: list[int] | None = Field(default=None, max_length=16)
    epochs: int | None = Field(default=None, ge=1, le=100_000)
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    lr: float | None = Field(default=None, gt=0, le=10)
    weight_decay: float | None = Field(default=None, ge=0, le=10)
    patience: int | None = Field(default=None, ge=1, le=100_000)
    val_fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    test_fraction: float | None = Field(
        default=None, ge=0, lt=1, description="rows held out to score the model (0: score on validation)")
    min_count: int | None = Field(
        default=None, ge=1, le=1_000_000, description="categorical values seen fewer times share the unknown slot")
    onehot_max: int | None = Field(
        default=None, ge=0, le=1000, description="categoricals with at most this many values are one-hot, not embedded")
    max_categories: int | None = Field(
        default=None, ge=0, le=100_000, description="keep only the most frequent values of a categorical (0: all)")


class TrainIn(Input):
    model_config = ConfigDict(extra="forbid")

    dataset_id: int
    target: str = Field(min_length=1, max_length=255)
    task: Literal["classification", "regression"]
    model_name: str = Field(min_length=1, max_length=64, pattern=f"^{NAME_RE.pattern}$")
    features: list[str] | None = Field(default=None, max_length=10_000)
    hyperparameters: Hyperparameters | None = None
    promote: bool = False
    tune: bool = Field(default=False, description="search a few learning rates and widths around the "
                       "hyperparameters; the one with the best validation loss is registered")
    time_limit_s: float | None = Field(default=None, ge=1, le=86_400,
                                       description="the search's time budget in seconds (required with tune)")


class JobOut(Schema):
    """A job as a client sees it (`selectors.job_snapshot`, also the snapshot of a realtime ``reset``)."""

    id: int
    kind: str
    state: str
    params: Any
    progress: Any
    result: Any
    error: str | None
    attempts: int
    cancel_requested: bool
    model: str | None
    dataset_id: int | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class BatchPredictIn(Input):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    dataset_id: int


class EpochMetricOut(Schema):
    epoch: int
    train_loss: float | None = Field(description="Training loss; null where it was not a finite number")
    val_loss: float | None
    metric_name: str = Field(description="accuracy (classification) or rmse (regression)")
    metric: float | None
    elapsed_s: float = Field(description="Seconds of training up to the end of this epoch")


class JobMetricsOut(Schema):
    job_id: int
    state: JobState
    epochs: list[EpochMetricOut]


# One Server-Sent Event as a client's parser sees it (realtime/sse.py writes them).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "The event's type: subscribed, reset, queued, epoch, ..."},
        "data": {"type": "string", "description": "The event as JSON"},
        "id": {"type": "string", "description": "<seq>:<epoch>, to send back as Last-Event-ID"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def _content(status: int, media_type: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for an answer that is not JSON (ninja documents only JSON bodies)."""
    return {"responses": {status: {"description": description, "content": {media_type: {"schema": schema}}}}}


def _out(job: Job) -> dict[str, Any]:
    return selectors.job_snapshot(job=job)


def _reload(job: Job) -> dict[str, Any]:
    return _out(Job.objects.select_related("owner", "model", "dataset").get(pk=job.pk))


@api_controller("/jobs", tags=["jobs"], auth=bearer_auth)
class JobController(Controller):
    @route.post("/train", response={201: JobOut, **errors(403, 404, 409)}, summary="Train a tabular model on a dataset")
    async def train(self, payload: TrainIn) -> tuple[int, dict[str, Any]]:
        hyper = payload.hyperparameters.model_dump(exclude_none=True) if payload.hyperparameters else {}

        def run() -> dict[str, Any]:
            job = services.job_train_create(
                owner=self.caller, dataset_id=payload.dataset_id, target=payload.target, task=payload.task,
                model_name=payload.model_name, features=payload.features, hyperparameters=hyper,
                promote=payload.promote, tune=payload.tune, time_limit_s=payload.time_limit_s,
            )
            return _reload(job)

        return 201, await sync_to_async(run)()

    @route.post("/batch-predict", response={201: JobOut, **errors(403, 404)},
                summary="Predict every row of a dataset into a CSV")
    async def batch_predict(self, payload: BatchPredictIn) -> tuple[int, dict[str, Any]]:
        def run() -> dict[str, Any]:
            job = services.job_batch_predict_create(owner=self.caller, model_name=payload.model,
                                                    version=payload.version, dataset_id=payload.dataset_id)
            return _reload(job)

        return 201, await sync_to_async(run)()

    @route.get("", summary="The caller's jobs, newest first")
    async def list_jobs(self, state: JobState | None = None,
                        limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            jobs = selectors.job_list(user=self.caller, state=state)[:limit]
            return [_out(j) for j in jobs]

        return await sync_to_async(run)()

    @route.get("/{job_id}", response=JobOut, summary="A job: state, progress, result, error")
    async def get_job(self, job_id: int) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            return _out(selectors.job_get(user=self.caller, job_id=job_id))

        return await sync_to_async(run)()

    @route.get("/{job_id}/metrics", response={200: JobMetricsOut, **errors(404)},
               summary="A training job's figures per epoch (kept with the job: no event log needed)")
    async def metrics(self, job_id: int) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            job = selectors.job_get(user=self.caller, job_id=job_id)
            return {"job_id": job.pk, "state": job.state, "epochs": selectors.job_metrics(job=job)}

        return await sync_to_async(run)()

    @route.post("/{job_id}/cancel", response={200: JobOut, **errors(403, 409)},
                summary="Cancel a queued or running job")
    async def cancel(self, job_id: int) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            job = selectors.job_get(user=self.caller, job_id=job_id)
            return _reload(services.job_cancel(job=job, actor=self.caller))

        return await sync_to_async(run)()

    @route.get("/{job_id}/output", summary="Download a batch prediction's CSV",
               openapi_extra=_content(200, "text/csv", "The predictions, one row per dataset row",
                                      {"type": "string"}))
    async def output(self, job_id: int):  # no return annotation: ninja-extra would make it the schema
        job = await sync_to_async(selectors.job_get)(user=self.caller, job_id=job_id)
        if job.kind != JobKind.BATCH_PREDICT or job.state != JobState.SUCCEEDED or not job.output_key:
            raise NotFound(f"job {job_id} has no output (yet)")
        response = StreamingHttpResponse(get_storage().stream(job.output_key), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="job-{job_id}-predictions.csv"'
        return response

    @route.get("/{job_id}/events", summary="The job's events as Server-Sent Events (Last-Event-ID honoured)",
               openapi_extra=_content(200, "text/event-stream", "The job's events, then live ones as they happen",
                                      SSE_EVENT))
    async def events(self, job_id: int):  # no return annotation: ninja-extra would make it the schema
        # db_async, not sync_to_async: the stream must not keep this request's pooled connection.
        await db_async(selectors.job_get)(user=self.caller, job_id=job_id)

        return await sse_response(self.http_request, topic=f"job:{job_id}", user=self.caller)
