"""The ``job:<id>``, ``model:<name>`` and ``serving:<name>`` topics: who may read them and what a
``reset`` snapshot holds. The rules are the app's own selectors, so a topic is readable exactly when the object is."""

from __future__ import annotations

import re
from typing import Any

from app.accounts.models import User
from app.core.db import db_async
from app.core.errors import NotFound
from app.jobs.models import Job
from app.jobs.selectors import job_get, job_snapshot
from app.registry.models import MlModel, ModelVersion
from app.registry.selectors import model_get
from app.serving import livestats, runtime
from realtime.bus import parse_topic, publish
from realtime.topics import register_topic

_JOB_ID = re.compile(r"[1-9][0-9]{0,17}")


def _job_id(topic: str) -> int:
    _, key = parse_topic(topic)
    if _JOB_ID.fullmatch(key) is None:  # not str.isdigit: "²" is a digit that int() refuses
        raise NotFound("no such job")
    return int(key)


def _job_readable(user: User, topic: str) -> bool:
    job_get(user=user, job_id=_job_id(topic))
    return True


def _job_snapshot(topic: str) -> dict[str, Any]:
    job = Job.objects.select_related("owner", "model", "dataset").filter(pk=_job_id(topic)).first()
    return {"job": job_snapshot(job=job) if job else None}


def _model_readable(user: User, topic: str) -> bool:
    model_get(user=user, name=parse_topic(topic)[1])
    return True


def _model_snapshot(topic: str) -> dict[str, Any]:
    model = MlModel.objects.filter(name=parse_topic(topic)[1]).first()
    if model is None:
        return {"model": None}
    versions = list(ModelVersion.objects.filter(model=model).order_by("number").values("number", "stage"))
    return {"model": {"name": model.name, "versions": versions}}


async def _job_authorize(user: User, topic: str) -> bool:
    return await db_async(_job_readable)(user, topic)


async def _job_snapshot_async(topic: str) -> dict[str, Any]:
    return await db_async(_job_snapshot)(topic)


async def _model_authorize(user: User, topic: str) -> bool:
    return await db_async(_model_readable)(user, topic)


async def _model_snapshot_async(topic: str) -> dict[str, Any]:
    return await db_async(_model_snapshot)(topic)


async def _publish_swap(name: str, type: str, data: dict[str, Any]) -> None:
    """Announces a serving process's hot swap on ``model:<name>`` (app.serving.runtime.swap_observers)."""
    await publish(f"model:{name}", type, {"model": name, **data})


def register() -> None:

    register_topic("job", authorize=_job_authorize, snapshot=_job_snapshot_async)
    register_topic("model", authorize=_model_authorize, snapshot=_model_snapshot_async)
    # serving:<model>: live serving figures (app.serving.livestats), readable exactly when the model is.
    register_topic("serving", authorize=livestats.topic_authorize, snapshot=livestats.topic_snapshot)
    if _publish_swap not in runtime.swap_observers:
        runtime.swap_observers.append(_publish_swap)


register()
