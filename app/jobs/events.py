"""Job events: lifecycle rows and the realtime events, written in the caller's transaction."""

from __future__ import annotations

from typing import Any

from app.events.services import publish_on_commit

from .models import Job, JobEvent

LIFECYCLE = {"queued", "started", "succeeded", "failed", "cancelled", "retrying"}


def job_topics(job: Job) -> list[str]:
    return [f"job:{job.pk}", f"user:{job.owner.username}"]


def job_event_emit(*, job: Job, type: str, data: dict[str, Any]) -> None:
    """Records lifecycle events in the database and the event on the job's and its owner's topics, inside
    the caller's transaction; the outbox publishes it once that commits (and Redis answers), so a
    rolled-back change is never heard of and a committed one is never lost.
    """
    payload = {"job_id": job.pk, "kind": job.kind, "state": job.state, **data}
    if type in LIFECYCLE:
        JobEvent.objects.create(job=job, type=type, data=payload)
    for topic in job_topics(job):
        publish_on_commit(topic, type, payload)
