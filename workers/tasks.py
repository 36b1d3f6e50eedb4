"""Celery tasks: thin, idempotent, taking ids; they call app services and own only retry policy.

Each task imports its service when it runs ("# when it runs" below): Celery imports this module in every
process it starts (beat and `celery inspect` too), and those need the task names, not the models, the
services and torch behind them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from app.core.logging import request_id_var
from workers.celery import app

logger = logging.getLogger(__name__)


@app.task(name="workers.tasks.health_ping_task", acks_late=True)
def health_ping_task() -> dict[str, object]:
    """Proves a worker consumes the queue. /readyz does not call it: readiness must not depend on workers."""
    import torch  # when it runs (imported already: the worker's start applied TORCHWIRE_TRAIN_THREADS with it)

    logger.info("health ping")
    return {"ok": True, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "request_id": request_id_var.get(), "torch_threads": torch.get_num_threads()}


@app.task(name="workers.tasks.train_job_task", bind=True, acks_late=True, max_retries=None)
def train_job_task(self: Any, job_id: int) -> str:
    """Idempotent: the job row's lease decides whether this delivery runs it (see app/jobs/runner.py)."""
    return _run_job(self, job_id)


@app.task(name="workers.tasks.batch_predict_job_task", bind=True, acks_late=True, max_retries=None)
def batch_predict_job_task(self: Any, job_id: int) -> str:
    return _run_job(self, job_id)


def _run_job(task: Any, job_id: int) -> str:
    from app.jobs.runner import Retry, job_run  # when it runs

    try:
        return job_run(job_id=job_id)
    except Retry as exc:
        raise task.retry(countdown=exc.countdown) from exc


@app.task(name="workers.tasks.jobs_reap_task")
def jobs_reap_task() -> list[int]:
    """Re-dispatches jobs whose worker vanished (lease expired)."""
    from app.jobs.services import job_reap_expired  # when it runs

    return job_reap_expired()


@app.task(name="workers.tasks.events_trim_task")
def events_trim_task() -> int:
    from realtime.maintenance import events_trim  # when it runs

    return events_trim()


@app.task(name="workers.tasks.events_outbox_prune_task")
def events_outbox_prune_task() -> int:
    """Deletes outbox rows published more than EVENT_OUTBOX_RETENTION_HOURS ago; pending ones stay."""
    from app.events.services import outbox_prune  # when it runs

    return outbox_prune()


@app.task(name="workers.tasks.storage_orphans_sweep_task")
def storage_orphans_sweep_task() -> int:
    from app.system.services import storage_orphans_sweep  # when it runs

    return len(storage_orphans_sweep())


@app.task(name="workers.tasks.monitoring_drift_check_task")
def monitoring_drift_check_task() -> int:
    """Drift of every version with recent raw-record traffic; a redelivery skips versions just checked."""
    from app.monitoring.services import drift_check_scheduled  # when it runs

    return drift_check_scheduled()


@app.task(name="workers.tasks.monitoring_trim_task")
def monitoring_trim_task() -> int:
    from app.monitoring.services import monitoring_trim  # when it runs

    return monitoring_trim()
