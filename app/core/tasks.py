"""Dispatching Celery tasks by name from the app, without importing ``workers`` (which imports app).

Call ``task_dispatch`` from ``transaction.on_commit`` so a task never starts before its row exists.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from app.core.logging import request_id_var


@lru_cache(maxsize=1)
def celery_client() -> Celery:
    client = Celery("torchwire-client")
    client.config_from_object("django.conf:settings", namespace="CELERY")
    return client


def task_dispatch(name: str, *args: Any, task_id: str | None = None, countdown: float | None = None) -> str:
    headers = {}
    request_id = request_id_var.get()
    if request_id != "-":
        headers["request_id"] = request_id
    result = celery_client().send_task(name, args=list(args), task_id=task_id, countdown=countdown, headers=headers)
    return str(result.id)
