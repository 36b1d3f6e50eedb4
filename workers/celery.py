"""The Celery app. Configuration comes from Django settings (CELERY_* names); see app/settings.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
)

from app.core.logging import request_id_var
from app.monitoring import celery_metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

app = Celery("torchwire")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("workers.tasks",)
celery_metrics.install()


def _schedule() -> dict[str, dict[str, Any]]:
    from django.conf import settings

    return {
        "health-ping": {"task": "workers.tasks.health_ping_task", "schedule": 300.0},
        "jobs-reap": {"task": "workers.tasks.jobs_reap_task", "schedule": float(settings.JOB_REAP_SECONDS)},
        "events-trim": {"task": "workers.tasks.events_trim_task", "schedule": float(settings.EVENT_TRIM_SECONDS)},
        "events-outbox-prune": {"task": "workers.tasks.events_outbox_prune_task",
                                "schedule": float(settings.EVENT_TRIM_SECONDS)},
        "storage-orphans": {"task": "workers.tasks.storage_orphans_sweep_task",
                            "schedule": float(settings.ORPHAN_SWEEP_SECONDS)},
        "monitoring-drift": {"task": "workers.tasks.monitoring_drift_check_task",
                             "schedule": float(settings.DRIFT_CHECK_SECONDS)},
        "monitoring-trim": {"task": "workers.tasks.monitoring_trim_task", "schedule": 3600.0},
    }


@app.on_after_configure.connect
def _beat_schedule(sender: Celery, **_: Any) -> None:
    sender.conf.beat_schedule = _schedule()


def _apply_train_threads() -> None:
    import torch  # here, not at module level: the web processes import this module too
    from django.conf import settings

    torch.set_num_threads(settings.TRAIN_THREADS)


@worker_init.connect
def _train_threads_main(sender: Any = None, **_: Any) -> None:
    """The solo and threads pools run tasks in the worker's main process. A prefork parent runs no task;
    each of its pool processes applies the setting as it starts (below)."""
    # pool_cls is still the name given (``prefork``, ``solo``, ...) or a class from the prefork module.
    if "prefork" not in str(getattr(sender, "pool_cls", "prefork")):
        _apply_train_threads()


@worker_process_init.connect
def _train_threads_child(**_: Any) -> None:
    """Each prefork pool process, as it starts (before its first task)."""
    _apply_train_threads()


@worker_ready.connect
def _reap_on_start(sender: Any = None, **_: Any) -> None:
    """A worker that starts after a crash picks up jobs whose lease ran out without waiting for beat."""
    try:
        # Here, not at the top: this module is imported before Django's app registry is ready.
        from app.jobs.services import job_reap_expired

        job_reap_expired()
    except Exception:  # the database may still be migrating; beat will do it
        import logging

        logging.getLogger(__name__).exception("reaping expired job leases at start-up failed")


@before_task_publish.connect
def _attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Carries the request id of the dispatching request into the task, for log correlation."""
    if headers is not None and "request_id" not in headers:
        request_id = request_id_var.get()
        if request_id != "-":
            headers["request_id"] = request_id


_tokens: dict[str, Any] = {}


@task_prerun.connect
def _bind_request_id(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    if task_id:
        _tokens[task_id] = request_id_var.set(request_id or f"task-{task_id}")


@task_postrun.connect
def _unbind_request_id(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        request_id_var.reset(token)
