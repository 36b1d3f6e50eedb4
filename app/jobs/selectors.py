from __future__ import annotations

from django.db.models import QuerySet

from app.accounts.models import Role, User
from app.core.errors import NotFound

from .models import Job, JobMetric, JobState


def job_list(*, user: User, state: JobState | str | None = None) -> QuerySet[Job]:
    qs = Job.objects.select_related("owner", "model", "dataset")
    if not user.has_role(Role.ADMIN):
        qs = qs.filter(owner=user)
    return qs.filter(state=state) if state else qs


def job_get(*, user: User, job_id: int) -> Job:
    job = job_list(user=user).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def job_snapshot(*, job: Job) -> dict[str, object]:
    """The job as a client sees it; also the snapshot sent with a realtime ``reset``."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "params": job.params,
        "progress": job.progress,
        "result": job.result,
        "error": job.error or None,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "model": job.model.name if job.model else None,
        "dataset_id": job.dataset_id,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_metrics(*, job: Job) -> list[dict[str, object]]:
    """The job's per-epoch figures, first epoch first (empty for a job that trains nothing)."""
    rows = JobMetric.objects.filter(job=job).order_by("epoch")
    return [dict(row) for row in rows.values("epoch", "train_loss", "val_loss", "metric_name", "metric", "elapsed_s")]
