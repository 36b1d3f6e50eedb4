"""Operational writes: the scheduled sweep of storage objects that no row points at."""

from __future__ import annotations

import asyncio
import logging
import time

from app.core.storage import get_storage, is_valid_key
from app.datasets.models import Dataset
from app.jobs.models import TERMINAL_STATES, Job
from app.registry.models import ModelVersion

logger = logging.getLogger(__name__)

PREFIXES = ("datasets/", "models/", "jobs/")


def _referenced_keys() -> set[str]:
    keys = set(Dataset.objects.values_list("storage_key", flat=True))
    keys |= set(ModelVersion.objects.values_list("artifact_key", flat=True))
    keys |= set(Job.objects.exclude(output_key="").values_list("output_key", flat=True))
    # A job that may still run (again) resumes from its checkpoint, however long it waits for a worker.
    keys |= {job.checkpoint_key for job in Job.objects.exclude(state__in=TERMINAL_STATES).only("pk")}
    return keys


def storage_orphans_sweep(*, older_than_seconds: float = 3600) -> list[str]:
    """Deletes objects under the app's prefixes that no row references and that are older than
    ``older_than_seconds`` (younger ones may belong to an upload whose row is about to commit).
    Blocking: runs in a Celery worker."""
    storage = get_storage()
    cutoff = time.time() - older_than_seconds

    async def candidates() -> list[str]:
        found = []
        for prefix in PREFIXES:
            async for key, modified in storage.listing(prefix):
                if modified < cutoff:
                    found.append(key)
        return found

    old = asyncio.run(candidates())
    referenced = _referenced_keys()
    foreign = [key for key in old if not is_valid_key(key)]
    if foreign:
        # No key the service writes looks like these: someone else's objects, left alone.
        logger.warning("storage sweep skipped %d objects whose names are not storage keys, e.g. %r",
                       len(foreign), foreign[0])
    orphans = [key for key in old if key not in referenced and is_valid_key(key)]

    async def delete() -> None:
        for key in orphans:
            await storage.delete(key)

    asyncio.run(delete())
    if orphans:
        logger.info("removed %d orphaned storage objects", len(orphans))
    return orphans
