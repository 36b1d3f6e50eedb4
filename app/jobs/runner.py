"""Running jobs inside a Celery worker. Blocking code: never call it from an event loop.

Exactly once, as far as a user can tell: the job row's lease decides who runs (`job_claim`); a
heartbeat thread renews it while the work runs (`lease.Lease`, which also retries every database write
of the attempt through a short outage); the model version a training job registers carries the job id
(`source_job_id`, unique), so a redelivered or repeated run can never register a second one; and every
terminal transition checks that this worker still holds the lease.

Training checkpoints after every epoch (`checkpoints`); a new attempt resumes after the last checkpoint
rather than starting over, with the same result, and `services.job_progress` reports each epoch once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.db import close_old_connections

from app.core.csvfile import csv_writer
from app.core.errors import ApiError
from app.core.storage import StorageFull, get_storage
from app.registry.models import ModelVersion, Stage
from app.registry.services import model_version_create
from inference.errors import InferenceError
from inference.formats import load_module, sha256_file
from tabular.profiling import DatasetProfile, iter_rows, read_columns
from tabular.training import (
    Checkpoint,
    CheckpointError,
    EpochReport,
    TrainingCancelled,
    TrainResult,
    format_predictions,
    train_tabular,
)
from tabular.tuning import tune_tabular

from . import services
from .checkpoints import job_checkpoint_delete, job_checkpoint_load, job_checkpoint_save
from .lease import TRANSIENT_DB_ERRORS, Lease, LeaseLost, discard_connection
from .models import Job, JobKind

logger = logging.getLogger(__name__)

# Outcomes after which the job is over, so its checkpoint has no further use.
_FINAL = {"succeeded", "succeeded (already registered)", "failed", "cancelled"}


class Retry(Exception):
    def __init__(self, countdown: float) -> None:
        super().__init__(f"job is held by another worker; retry in {countdown:.1f}s")
        self.countdown = countdown


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _download(key: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="tw-job-", suffix=suffix)
    os.close(fd)
    path = Path(name)
    asyncio.run(get_storage().download(key, path))
    return path


def job_run(*, job_id: int) -> str:
    """Runs one job if it can be claimed. Returns what happened; raises Retry if another worker holds it."""
    worker = worker_name()
    claimed_at = time.monotonic()
    job, wait = services.job_claim(job_id=job_id, worker=worker)
    if job is None:
        if wait > 0:
            raise Retry(wait)
        return "nothing to do"
    lease = Lease(job=job, worker=worker, seconds=settings.JOB_LEASE_SECONDS, renewed=claimed_at)
    with lease.renewing():
        try:
            outcome = _attempt(job, lease)
        except LeaseLost:
            logger.warning("job %s: attempt %s stopped, its lease lost; a new attempt resumes it", job.pk,
                           job.attempts)
            return "lease lost"
    if outcome in _FINAL and job.kind == JobKind.TRAIN:
        job_checkpoint_delete(job=job)
    return outcome


def _attempt(job: Job, lease: Lease) -> str:
    worker = lease.worker
    try:
        if job.kind == JobKind.TRAIN:
            return _train(job, lease)
        return _batch_predict(job, lease)
    except _Cancelled:
        lease.call(lambda: services.job_mark_cancelled(job=job, worker=worker), what="recording the cancellation")
        return "cancelled"
    except LeaseLost:
        raise
    except TRANSIENT_DB_ERRORS:
        # Not the job's fault: this attempt stops, and once its lease runs out the next one resumes.
        logger.exception("job %s: the database failed outside a retried write; abandoning attempt %s", job.pk,
                         job.attempts)
        return "abandoned"
    except (ApiError, InferenceError) as exc:
        # The job's input cannot be used (a dataset that cannot train, a model that cannot predict it):
        # the job says why; there is no server fault to trace.
        logger.warning("job %s failed: %s", job.pk, exc.message)
        reason = exc.message[:2000]
        lease.call(lambda: services.job_fail(job=job, worker=worker, error=reason),
                   what="recording the failure")
        return "failed"
    except StorageFull as exc:
        # Nothing half-written was kept and no version or output row names it; the owner can resubmit
        # once the operator frees space.
        logger.warning("job %s failed: %s", job.pk, exc)
        full = f"{exc}; the job stored nothing: submit it again once the storage has space"
        lease.call(lambda: services.job_fail(job=job, worker=worker, error=full), what="recording the failure")
        return "failed"
    except Exception as exc:
        logger.exception("job %s failed", job.pk)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        lease.call(lambda: services.job_fail(job=job, worker=worker, error=message[:2000]),
                   what="recording the failure")
        return "failed"


class _Cancelled(Exception):
    pass


def _cancel_check(job: Job, lease: Lease) -> bool:
    """Whether the job's owner asked to cancel it. A database error counts as no (the question comes back
    within a second), unless the lease has run out meanwhile."""
    lease.check()
    try:
        return services.job_cancel_requested(job=job)
    except TRANSIENT_DB_ERRORS as exc:
        discard_connection()
        logger.warning("job %s: could not check for cancellation (%s); training goes on", job.pk, exc)
        return False


def _train(job: Job, lease: Lease) -> str:
    worker = lease.worker
    params = job.params
    assert job.dataset is not None and job.model is not None, "training jobs have a dataset and a model"
    existing = lease.call(lambda: ModelVersion.objects.filter(source_job_id=job.pk).first(),
                          what="looking for its version")
    if existing is not None:
        # A previous attempt registered the version and died before recording success.
        result = {"model": job.model.name, "version": existing.number, "metrics": existing.metrics}
        lease.call(lambda: services.job_succeed(job=job, worker=worker, result=result), what="recording success")
        return "succeeded (already registered)"

    profile = DatasetProfile.from_dict(job.dataset.profile)
    path = _download(job.dataset.storage_key, ".csv")
    try:
        features = params.get("features") or [n for n in profile.names if n != params["target"]]
        columns = read_columns(path, profile, [*features, params["target"]])
    finally:
        path.unlink(missing_ok=True)

    def on_epoch(report: EpochReport) -> None:
        data = report.to_dict()
        held = lease.call(lambda: services.job_progress(job=job, worker=worker, type="epoch", data=data),
                          what=f"recording epoch {report.epoch}")
        close_old_connections()
        if not held:
            lease.lost.set()
            raise LeaseLost

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        lease.check()  # a worker that lost the job must not overwrite the new attempt's checkpoint
        job_checkpoint_save(job=job, checkpoint=checkpoint)

    if params.get("tune"):
        # A search does not checkpoint (tabular.tuning): a restarted job searches again from trial 0.
        try:
            trained = tune_tabular(columns, profile, target=params["target"], task=params["task"], features=features,
                                   hyperparameters=params.get("hyperparameters") or {},
                                   time_limit_s=float(params["time_limit_s"]), on_epoch=on_epoch,
                                   should_cancel=lambda: _cancel_check(job, lease))
        except TrainingCancelled as exc:
            raise _Cancelled from exc
        return _register(job, lease, trained)

    resume = job_checkpoint_load(job=job)
    if resume is not None:
        logger.info("job %s: attempt %s resumes after epoch %s", job.pk, job.attempts, resume.epoch)
        # The attempt that stored the checkpoint may have died before it reported that epoch.
        on_epoch(resume.report)
        epoch = resume.epoch
        if not lease.call(lambda: services.job_resumed(job=job, worker=worker, epoch=epoch), what="resuming"):
            raise LeaseLost

    def train(start: Checkpoint | None) -> TrainResult:
        return train_tabular(columns, profile, target=params["target"], task=params["task"], features=features,
                             hyperparameters=params.get("hyperparameters") or {}, on_epoch=on_epoch,
                             should_cancel=lambda: _cancel_check(job, lease), on_checkpoint=on_checkpoint,
                             resume=start)

    try:
        try:
            trained = train(resume)
        except CheckpointError as exc:
            logger.warning("job %s: its checkpoint does not apply (%s); training starts over", job.pk, exc.message)
            trained = train(None)
    except TrainingCancelled as exc:
        raise _Cancelled from exc
    return _register(job, lease, trained)


def _register(job: Job, lease: Lease, trained: TrainResult) -> str:
    """Store the trained weights and register the version, once per job."""
    import safetensors.torch  # imported where used, as the runner's other training imports are

    worker = lease.worker
    params = job.params
    assert job.model is not None
    if lease.call(lambda: services.job_cancel_requested(job=job), what="checking for cancellation"):
        raise _Cancelled

    meta = trained.to_dict()
    with tempfile.TemporaryDirectory(prefix="tw-train-") as tmp:
        weights = Path(tmp) / "model.safetensors"
        safetensors.torch.save_file(trained.state_dict, str(weights))
        key = f"models/{job.model.name}/job-{job.pk}-{uuid.uuid4().hex[:8]}.safetensors"
        stored = asyncio.run(get_storage().save_file(key, weights))
    extras = {k: meta[k] for k in ("pipeline", "task", "target", "features", "labels", "reference_stats",
                                   "hyperparameters", "epochs_run", "best_epoch")}
    stage = Stage.PRODUCTION if params.get("promote") else Stage.STAGING
    model = job.model
    # Idempotent per job (source_job_id), so a retry after a commit whose answer was lost is harmless.
    version = lease.call(lambda: model_version_create(
        model=model, actor=job.owner, fmt="safetensors", architecture=trained.architecture,
        config=trained.config, signature=trained.signature, artifact_key=stored.key,
        artifact_sha256=stored.sha256, artifact_size=stored.size, extras=extras, metrics=trained.metrics,
        stage=stage, source_job_id=job.pk,
    ), what="registering the version")
    result = {"model": job.model.name, "version": version.number, "stage": version.stage, "metrics": trained.metrics,
              "epochs_run": trained.epochs_run}
    if not lease.call(lambda: services.job_succeed(job=job, worker=worker, result=result), what="recording success"):
        return "lease lost after registering"
    return "succeeded"


def _batch_predict(job: Job, lease: Lease) -> str:
    assert job.dataset is not None and job.model is not None
    version = lease.call(
        lambda: ModelVersion.objects.select_related("model").get(model=job.model, number=job.params["version"]),
        what="loading the version")
    # Checked when the job was created; versions and datasets do not change, so this only guards old jobs.
    plan = services.batch_predict_plan(version=version, dataset=job.dataset)
    weights = _download(version.artifact_key, ".safetensors")
    dataset_path = _download(job.dataset.storage_key, ".csv")
    out_fd, out_name = tempfile.mkstemp(prefix="tw-predictions-", suffix=".csv")
    os.close(out_fd)
    out_path = Path(out_name)
    classification = plan.task == "classification"
    try:
        if sha256_file(weights) != version.artifact_sha256:
            raise ValueError(f"artifact of version {version.number} failed its sha256 check")
        module = load_module(weights, version.format, version.architecture, version.config, "cpu")
        profile = DatasetProfile.from_dict(job.dataset.profile)
        rows = 0
        with out_path.open("w", newline="") as fh:
            # Labels come from training data, which anyone who trains a public model chooses.
            writer = csv_writer(fh)
            writer.writerow(["row", "label", *[f"p_{label}" for label in plan.labels]] if classification
                            else ["row", "value"])
            batch: list[dict[str, Any]] = []

            def flush() -> None:
                nonlocal rows
                x = plan.pipeline.transform_records(batch)
                with torch.inference_mode():
                    outputs = module(torch.from_numpy(np.asarray(x))).float().numpy()
                for record in format_predictions(outputs, plan.labels, plan.task):
                    if classification:
                        writer.writerow([rows, record["label"],
                                         *[record["probabilities"][label] for label in plan.labels]])
                    else:
                        writer.writerow([rows, record["value"]])
                    rows += 1
                batch.clear()

            for values in iter_rows(dataset_path, profile, plan.columns):
                batch.append(dict(zip(plan.columns, values, strict=True)))
                if len(batch) >= 1024:
                    flush()
                    if _cancel_check(job, lease):
                        raise _Cancelled
            if batch:
                flush()
        key = f"jobs/{job.pk}/predictions-{uuid.uuid4().hex[:8]}.csv"
        stored = asyncio.run(get_storage().save_file(key, out_path))
    finally:
        for path in (weights, dataset_path, out_path):
            path.unlink(missing_ok=True)
    result = {"rows": rows, "sha256": stored.sha256, "model": job.model.name, "version": version.number}
    if not lease.call(lambda: services.job_succeed(job=job, worker=lease.worker, result=result,
                                                   output_key=stored.key), what="recording success"):
        return "lease lost after writing"
    return "succeeded"
