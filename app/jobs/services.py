"""Writes for jobs. Creation and cancellation run in API requests; claim, heartbeat, progress and the
terminal transitions run in Celery workers. Every transition is one transaction with its event."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from app.accounts.models import Role, User
from app.core.errors import Conflict, Forbidden, Invalid
from app.core.logging import request_id_var
from app.core.tasks import task_dispatch
from app.datasets.models import Dataset
from app.datasets.selectors import dataset_get
from app.registry.models import MlModel, ModelVersion, Stage, Visibility
from app.registry.selectors import model_can_manage, model_get, model_version_get
from app.registry.services import model_name_check, model_name_taken
from inference.errors import InferenceError
from tabular.features import FeaturePipeline
from tabular.training import Hyperparameters, TrainingError

from .events import job_event_emit
from .models import TERMINAL_STATES, Job, JobKind, JobMetric, JobState

TASKS = {JobKind.TRAIN: "workers.tasks.train_job_task", JobKind.BATCH_PREDICT: "workers.tasks.batch_predict_job_task"}
TASKS_PREDICTABLE = ("classification", "regression")
HYPERPARAMETERS = {
    "hidden", "epochs", "batch_size", "lr", "weight_decay", "patience", "val_fraction", "seed", "dropout",
    "test_fraction", "min_count", "onehot_max", "max_categories",
}


def _field_error(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", details=[{"loc": ["body", field], "field": field, "msg": message}])


def _dispatch_on_commit(job: Job) -> None:
    name, job_id = TASKS[JobKind(job.kind)], job.pk
    transaction.on_commit(lambda: task_dispatch(name, job_id))


def _columns(dataset: Dataset) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dataset.profile.get("columns", [])}


def job_train_create(
    *,
    owner: User,
    dataset_id: int,
    target: str,
    task: str,
    model_name: str,
    features: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    promote: bool = False,
    tune: bool = False,
    time_limit_s: float | None = None,
) -> Job:
    if not owner.has_role(Role.MEMBER):
        raise Forbidden("running jobs needs the member role or higher")
    dataset = dataset_get(user=owner, dataset_id=dataset_id)
    columns = _columns(dataset)
    if target not in columns:
        raise _field_error("target", f"column {target!r} is not in the dataset (columns: {', '.join(columns)})")
    if task not in ("classification", "regression"):
        raise _field_error("task", "must be classification or regression")
    if task == "regression" and columns[target].get("kind") != "numeric":
        raise _field_error("target", f"regression needs a numeric target; {target!r} is {columns[target].get('kind')}")
    if features is not None:
        unknown = [f for f in features if f not in columns]
        if unknown:
            raise _field_error("features", f"unknown columns: {', '.join(unknown)}")
        if target in features:
            raise _field_error("features", "the target cannot also be a feature")
        if not features:
            raise _field_error("features", "at least one feature is needed")
    hyper = dict(hyperparameters or {})
    unknown_h = sorted(set(hyper) - HYPERPARAMETERS)
    if unknown_h:
        raise _field_error("hyperparameters", f"unknown keys: {', '.join(unknown_h)}")
    try:
        hyper = Hyperparameters.from_dict(hyper).to_dict()
    except TrainingError as exc:
        raise _field_error("hyperparameters", exc.message) from exc
    if tune and time_limit_s is None:
        raise _field_error("time_limit_s", "a search needs a time limit (seconds)")
    if time_limit_s is not None and not tune:
        raise _field_error("time_limit_s", "only a search (tune: true) takes a time limit")
    model_name_check(name=model_name, field="model_name")

    with transaction.atomic():
        model = _train_target(owner=owner, name=model_name, dataset=dataset)
        job = Job.objects.create(
            owner=owner,
            kind=JobKind.TRAIN,
            dataset=dataset,
            model=model,
            request_id=request_id_var.get(),
            params={"dataset_id": dataset.pk, "target": target, "task": task, "model_name": model_name,
                    "features": features, "hyperparameters": hyper, "promote": promote,
                    **({"tune": True, "time_limit_s": time_limit_s} if tune else {})},
        )
        job_event_emit(job=job, type="queued", data={"model": model_name})
        _dispatch_on_commit(job)
    return job


def _train_target(*, owner: User, name: str, dataset: Dataset) -> MlModel:
    """The model a training job registers its version on: the caller's own, or a new private one. Any
    other taken name answers as POST /models does (409, whether or not the caller can see the model)."""
    model = MlModel.objects.select_for_update().filter(name=name).first()
    if model is None:
        try:
            with transaction.atomic():
                return MlModel.objects.create(name=name, owner=owner, visibility=Visibility.PRIVATE,
                                              description=f"trained from dataset {dataset.name}")
        except IntegrityError:  # created meanwhile by a concurrent request
            model = MlModel.objects.select_for_update().get(name=name)
    if not (model.owner_id == owner.pk or model_can_manage(user=owner, model=model)):
        raise model_name_taken(name)
    return model


@dataclass(frozen=True)
class BatchPlan:
    """What a batch prediction runs: the version's feature pipeline, the dataset columns it reads, and
    how outputs become CSV cells."""

    pipeline: FeaturePipeline
    columns: list[str]
    labels: list[str]
    task: str


def batch_predict_plan(*, version: ModelVersion, dataset: Dataset) -> BatchPlan:
    """Raises Invalid (422) unless ``version`` can predict every row of ``dataset``: it must be a tabular
    model trained by Torchwire (its stored feature pipeline encodes the rows) and the dataset must hold
    every column the pipeline reads. Checked when the job is created and again by the worker."""
    name = f"model {version.model.name!r} version {version.number}"
    pipeline_data = version.extras.get("pipeline")
    task = version.extras.get("task", "regression")
    labels = version.extras.get("labels") or []
    if version.format != "safetensors" or not isinstance(pipeline_data, dict) or task not in TASKS_PREDICTABLE:
        raise _field_error("model", f"{name} cannot run a batch prediction: only tabular models trained by "
                                    "Torchwire can (it applies the feature pipeline stored with the version)")
    try:
        pipeline = FeaturePipeline.from_dict(pipeline_data)
    except InferenceError as exc:
        raise _field_error("model", f"{name} has an unusable feature pipeline: {exc.message}") from exc
    if task == "classification" and not (isinstance(labels, list) and labels):
        raise _field_error("model", f"{name} is a classifier without its class labels")
    names = set(_columns(dataset))
    missing = [c for c in pipeline.columns if c not in names]
    if missing:
        raise _field_error("dataset_id", f"dataset {dataset.pk} lacks columns {name} needs: {', '.join(missing)}")
    return BatchPlan(pipeline=pipeline, columns=list(pipeline.columns), labels=[str(x) for x in labels], task=task)


def job_batch_predict_create(*, owner: User, model_name: str, version: int | None, dataset_id: int) -> Job:
    if not owner.has_role(Role.MEMBER):
        raise Forbidden("running jobs needs the member role or higher")
    model = model_get(user=owner, name=model_name)
    dataset = dataset_get(user=owner, dataset_id=dataset_id)
    if version is None:
        resolved = ModelVersion.objects.filter(model=model, stage=Stage.PRODUCTION).select_related("model").first()
        if resolved is None:
            raise _field_error("version", f"model {model_name!r} has no production version; promote one or pass "
                                          "a version")
    else:
        resolved = model_version_get(model=model, number=version)
    batch_predict_plan(version=resolved, dataset=dataset)
    with transaction.atomic():
        job = Job.objects.create(
            owner=owner, kind=JobKind.BATCH_PREDICT, dataset=dataset, model=model, request_id=request_id_var.get(),
            params={"model": model_name, "version": resolved.number, "dataset_id": dataset.pk},
        )
        job_event_emit(job=job, type="queued", data={"model": model_name, "version": resolved.number})
        _dispatch_on_commit(job)
    return job


def job_cancel(*, job: Job, actor: User) -> Job:
    """A queued job is cancelled at once; a running one at its next checkpoint (at least every epoch)."""
    if job.owner_id != actor.pk and not actor.has_role(Role.ADMIN):
        raise Forbidden("only the job's owner or an admin can cancel it")
    with transaction.atomic():
        locked = Job.objects.select_for_update(of=("self",)).select_related("owner").get(pk=job.pk)
        if locked.state in TERMINAL_STATES:
            raise Conflict(f"job {locked.pk} already {locked.state}")
        locked.cancel_requested = True
        if locked.state == JobState.QUEUED:
            locked.state = JobState.CANCELLED
            locked.finished_at = timezone.now()
            job_event_emit(job=locked, type="cancelled", data={"reason": "cancelled before it started"})
        locked.save()
    return locked


# --- worker side ------------------------------------------------------------------------------


def job_claim(*, job_id: int, worker: str) -> tuple[Job | None, float]:
    """Takes the lease if the job is queued, or running under an expired lease (its worker vanished).

    Returns (job, 0) when claimed, (None, seconds) when another live worker holds it (retry after
    that many seconds), (None, 0) when there is nothing to do (finished, cancelled or unknown).
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.JOB_LEASE_SECONDS)
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("owner", "model", "dataset")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.state in TERMINAL_STATES:
            return None, 0.0
        if job.state == JobState.RUNNING and job.lease_expires_at and job.lease_expires_at > now:
            return None, (job.lease_expires_at - now).total_seconds() + 0.5
        if job.cancel_requested:
            job.state, job.finished_at = JobState.CANCELLED, now
            job.save()
            job_event_emit(job=job, type="cancelled", data={})
            return None, 0.0
        if job.attempts >= settings.JOB_MAX_ATTEMPTS:
            job.state, job.finished_at = JobState.FAILED, now
            job.error = f"gave up after {job.attempts} attempts (the worker was lost each time)"
            job.save()
            job_event_emit(job=job, type="failed", data={"error": job.error})
            return None, 0.0
        retry = job.state == JobState.RUNNING
        job.state = JobState.RUNNING
        job.attempts += 1
        job.lease_owner = worker
        job.lease_expires_at = now + lease
        job.started_at = job.started_at or now
        job.save()
        job_event_emit(job=job, type="started", data={"attempt": job.attempts, "worker": worker, "retry": retry})
    return job, 0.0


def job_heartbeat(*, job: Job, worker: str) -> bool:
    """Extends the lease; False if this worker no longer holds it (another took over, or it was cancelled)."""
    expires = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    updated = Job.objects.filter(pk=job.pk, state=JobState.RUNNING, lease_owner=worker).update(lease_expires_at=expires)
    return bool(updated)


def job_cancel_requested(*, job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, cancel_requested=True).exists()


def _held(job: Job, worker: str) -> QuerySet[Job]:
    """The running job's row, locked, while `worker` holds its lease; otherwise no row."""
    return Job.objects.select_for_update(of=("self",)).filter(pk=job.pk, state=JobState.RUNNING, lease_owner=worker)


def job_progress(*, job: Job, worker: str, type: str, data: dict[str, Any]) -> bool:
    """Records progress and its event. With an ``epoch`` in `data`, once per epoch: a write retried after
    its first try did commit, or an epoch reported again by a resumed attempt, changes nothing and
    publishes nothing. False if `worker` no longer holds the lease."""
    with transaction.atomic():
        recorded = _held(job, worker).values_list("progress", flat=True).first()
        if recorded is None:
            return False
        epoch = data.get("epoch")
        if isinstance(epoch, int) and isinstance(recorded.get("epoch"), int) and recorded["epoch"] >= epoch:
            return True
        Job.objects.filter(pk=job.pk).update(progress=data)
        job.progress = data
        if type == "epoch" and isinstance(epoch, int):
            _metric_record(job=job, epoch=epoch, data=data)
        job_event_emit(job=job, type=type, data=data)
    return True


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _metric_record(*, job: Job, epoch: int, data: dict[str, Any]) -> None:
    """The epoch's row; called in `job_progress`'s transaction, after its once-per-epoch check."""
    JobMetric.objects.bulk_create([JobMetric(
        job=job, epoch=epoch, train_loss=_finite(data.get("train_loss")), val_loss=_finite(data.get("val_loss")),
        metric_name=str(data.get("metric_name") or "")[:32], metric=_finite(data.get("metric")),
        elapsed_s=_finite(data.get("elapsed_s")) or 0.0,
    )], ignore_conflicts=True)


def job_resumed(*, job: Job, worker: str, epoch: int) -> bool:
    """Tells the job's subscribers that this attempt continues from the checkpoint of `epoch`: no epoch
    up to it runs again. False if `worker` no longer holds the lease."""
    with transaction.atomic():
        if _held(job, worker).values_list("pk", flat=True).first() is None:
            return False
        job_event_emit(job=job, type="resumed", data={"epoch": epoch, "attempt": job.attempts})
    return True


def _finish(job: Job, worker: str, state: JobState, type: str, data: dict[str, Any], **fields: Any) -> bool:
    with transaction.atomic():
        locked = Job.objects.select_for_update(of=("self",)).select_related("owner").filter(pk=job.pk).first()
        if locked is None or locked.state != JobState.RUNNING or locked.lease_owner != worker:
            return False
        locked.state = state
        locked.finished_at = timezone.now()
        locked.lease_expires_at = None
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
        job_event_emit(job=locked, type=type, data=data)
    return True


def job_succeed(*, job: Job, worker: str, result: dict[str, Any], output_key: str = "") -> bool:
    return _finish(job, worker, JobState.SUCCEEDED, "succeeded", result, result=result, output_key=output_key)


def job_fail(*, job: Job, worker: str, error: str) -> bool:
    return _finish(job, worker, JobState.FAILED, "failed", {"error": error}, error=error)


def job_mark_cancelled(*, job: Job, worker: str) -> bool:
    return _finish(job, worker, JobState.CANCELLED, "cancelled", {"reason": "cancelled while running"})


def job_reap_expired() -> list[int]:
    """Running jobs whose lease expired lost their worker: dispatch them again (the claim decides)."""
    now = timezone.now()
    expired = list(
        Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now).values_list("pk", "kind")
    )
    stale = now - timedelta(seconds=settings.JOB_LEASE_SECONDS * 5)
    stale_queued = list(Job.objects.filter(state=JobState.QUEUED, created_at__lt=stale).values_list("pk", "kind"))
    for job_id, kind in expired + stale_queued:
        task_dispatch(TASKS[JobKind(kind)], job_id)
    return [job_id for job_id, _ in expired + stale_queued]
