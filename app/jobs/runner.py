"""Running jobs inside a Celery worker. Blocking code: never call it from an event loop.

Exactly once, as far as a user can tell: the job row's lease decides who runs (`job_claim`); a
heartbeat thread renews it while the work runs; the model version a training job registers carries the
job id (`source_job_id`, unique), so a redelivered or repeated run can never register a second one;
and every terminal transition checks that this worker still holds the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from app.core.csvfile import csv_writer
from app.core.errors import ApiError
from app.core.storage import get_storage
from app.registry.models import ModelVersion, Stage
from app.registry.services import model_version_create
from inference.errors import InferenceError

from . import services
from .models import Job, JobKind

logger = logging.getLogger(__name__)


class Retry(Exception):
    def __init__(self, countdown: float) -> None:
        super().__init__(f"job is held by another worker; retry in {countdown:.1f}s")
        self.countdown = countdown


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@contextmanager
def _heartbeat(job: Job, worker: str) -> Iterator[threading.Event]:
    """Renews the lease every third of its length; sets the yielded event if the lease was lost."""
    stop = threading.Event()
    lost = threading.Event()

    def beat() -> None:
        interval = max(settings.JOB_LEASE_SECONDS / 3, 0.5)
        while not stop.wait(interval):
            try:
                if not services.job_heartbeat(job=job, worker=worker):
                    lost.set()
                    return
            except Exception:
                logger.exception("heartbeat of job %s failed", job.pk)
            finally:
                close_old_connections()

    thread = threading.Thread(target=beat, name=f"lease-{job.pk}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(5)


def _download(key: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="tw-job-", suffix=suffix)
    os.close(fd)
    path = Path(name)
    asyncio.run(get_storage().download(key, path))
    return path


def job_run(*, job_id: int) -> str:
    """Runs one job if it can be claimed. Returns what happened; raises Retry if another worker holds it."""
    worker = worker_name()
    job, wait = services.job_claim(job_id=job_id, worker=worker)
    if job is None:
        if wait > 0:
            raise Retry(wait)
        return "nothing to do"
    with _heartbeat(job, worker) as lost:
        try:
            if job.kind == JobKind.TRAIN:
                return _train(job, worker, lost)
            return _batch_predict(job, worker)
        except _Cancelled:
            services.job_mark_cancelled(job=job, worker=worker)
            return "cancelled"
        except _LeaseLost:
            return "lease lost"
        except (ApiError, InferenceError) as exc:
            # The job's input cannot be used (a dataset that cannot train, a model that cannot predict it):
            # the job says why; there is no server fault to trace.
            logger.warning("job %s failed: %s", job.pk, exc.message)
            services.job_fail(job=job, worker=worker, error=exc.message[:2000])
            return "failed"
        except Exception as exc:
            logger.exception("job %s failed", job.pk)
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            services.job_fail(job=job, worker=worker, error=message[:2000])
            return "failed"


class _Cancelled(Exception):
    pass


class _LeaseLost(Exception):
    pass


def _train(job: Job, worker: str, lost: threading.Event) -> str:
    import safetensors.torch

    from inference.tabular import DatasetProfile, read_columns
    from inference.training import EpochReport, TrainingCancelled, train_tabular

    params = job.params
    assert job.dataset is not None and job.model is not None, "training jobs have a dataset and a model"
    existing = ModelVersion.objects.filter(source_job_id=job.pk).first()
    if existing is not None:
        # A previous attempt registered the version and died before recording success.
        result = {"model": job.model.name, "version": existing.number, "metrics": existing.metrics}
        services.job_succeed(job=job, worker=worker, result=result)
        return "succeeded (already registered)"

    profile = DatasetProfile.from_dict(job.dataset.profile)
    path = _download(job.dataset.storage_key, ".csv")
    try:
        features = params.get("features") or [n for n in profile.names if n != params["target"]]
        columns = read_columns(path, profile, [*features, params["target"]])
    finally:
        path.unlink(missing_ok=True)

    def on_epoch(report: EpochReport) -> None:
        if lost.is_set():
            raise _LeaseLost
        services.job_progress(job=job, worker=worker, type="epoch", data=report.to_dict())
        close_old_connections()

    def should_cancel() -> bool:
        return services.job_cancel_requested(job=job)

    try:
        trained = train_tabular(columns, profile, target=params["target"], task=params["task"], features=features,
                                hyperparameters=params.get("hyperparameters") or {}, on_epoch=on_epoch,
                                should_cancel=should_cancel)
    except TrainingCancelled as exc:
        raise _Cancelled from exc
    if services.job_cancel_requested(job=job):
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
    version = model_version_create(
        model=job.model, actor=job.owner, fmt="safetensors", architecture=trained.architecture,
        config=trained.config, signature=trained.signature, artifact_key=stored.key,
        artifact_sha256=stored.sha256, artifact_size=stored.size, extras=extras, metrics=trained.metrics,
        stage=stage, source_job_id=job.pk,
    )
    result = {"model": job.model.name, "version": version.number, "stage": version.stage, "metrics": trained.metrics,
              "epochs_run": trained.epochs_run}
    if not services.job_succeed(job=job, worker=worker, result=result):
        return "lease lost after registering"
    return "succeeded"


def _batch_predict(job: Job, worker: str) -> str:
    import numpy as np
    import torch

    from inference.formats import load_module, sha256_file
    from inference.tabular import DatasetProfile, iter_rows
    from inference.training import format_predictions

    assert job.dataset is not None and job.model is not None
    version = ModelVersion.objects.select_related("model").get(model=job.model, number=job.params["version"])
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
                    if services.job_cancel_requested(job=job):
                        raise _Cancelled
            if batch:
                flush()
        key = f"jobs/{job.pk}/predictions-{uuid.uuid4().hex[:8]}.csv"
        stored = asyncio.run(get_storage().save_file(key, out_path))
    finally:
        for path in (weights, dataset_path, out_path):
            path.unlink(missing_ok=True)
    services.job_succeed(job=job, worker=worker, result={"rows": rows, "sha256": stored.sha256,
                                                          "model": job.model.name, "version": version.number},
                         output_key=stored.key)
    return "succeeded"
