"""Job events: persisted lifecycle events and the realtime publish, always after the commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .models import Job, JobEvent

logger = logging.getLogger(__name__)

LIFECYCLE = {"queued", "started", "succeeded", "failed", "cancelled", "retrying"}


def job_topics(job: Job) -> list[str]:
    return [f"job:{job.pk}", f"user:{job.owner.username}"]


def job_event_emit(*, job: Job, type: str, data: dict[str, Any]) -> None:
    """Records lifecycle events in the database (inside the caller's transaction) and publishes the event
    on the job's and its owner's topics once that transaction commits; a rolled-back change is never heard of.
    """
    payload = {"job_id": job.pk, "kind": job.kind, "state": job.state, **data}
    if type in LIFECYCLE:
        JobEvent.objects.create(job=job, type=type, data=payload)
    topics = job_topics(job)

    def publish() -> None:
        from realtime.bus import publish_sync

        for topic in topics:
            try:
                publish_sync(topic, type, payload)
            except Exception:
                # The job row is the source of truth; a client that missed this gets a reset snapshot.
                logger.exception("could not publish %s on %s", type, topic)

    transaction.on_commit(publish)
