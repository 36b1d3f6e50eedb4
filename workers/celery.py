"""The Celery app. Configuration comes from Django settings (CELERY_* names); see app/settings.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

app = Celery("torchwire")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("workers.tasks",)
app.conf.beat_schedule = {
    "health-ping": {"task": "workers.tasks.health_ping_task", "schedule": 300.0},
}


@before_task_publish.connect
def _attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Carries the request id of the dispatching request into the task, for log correlation."""
    from app.core.logging import request_id_var

    if headers is not None and "request_id" not in headers:
        request_id = request_id_var.get()
        if request_id != "-":
            headers["request_id"] = request_id


_tokens: dict[str, Any] = {}


@task_prerun.connect
def _bind_request_id(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    from app.core.logging import request_id_var

    request_id = getattr(task.request, "request_id", None) if task is not None else None
    if task_id:
        _tokens[task_id] = request_id_var.set(request_id or f"task-{task_id}")


@task_postrun.connect
def _unbind_request_id(task_id: str | None = None, **_: Any) -> None:
    from app.core.logging import request_id_var

    token = _tokens.pop(task_id or "", None)
    if token is not None:
        request_id_var.reset(token)
