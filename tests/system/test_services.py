"""Scheduled upkeep: orphaned storage objects are swept, referenced and young ones are kept."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from app.core.storage import get_storage

pytestmark = pytest.mark.django_db(transaction=True)


def test_orphan_sweep(make_user):
    from app.datasets.models import Dataset
    from app.system.services import storage_orphans_sweep

    storage = get_storage()
    root = Path(os.environ["STORAGE_URL"].removeprefix("file://"))

    async def put(key: str) -> None:
        async def chunks():
            yield b"a,b\n1,2\n"

        await storage.save(key, chunks())

    for key in ("datasets/9/kept.csv", "datasets/9/orphan.csv", "models/x/young.safetensors"):
        asyncio.run(put(key))
    old = time.time() - 7200
    for key in ("datasets/9/kept.csv", "datasets/9/orphan.csv"):
        os.utime(root / key, (old, old))
    owner = make_user("member")
    Dataset.objects.create(owner_id=owner.pk, name="kept.csv", storage_key="datasets/9/kept.csv", sha256="x",
                           size_bytes=8, row_count=1, profile={"rows": 1, "columns": []})
    removed = storage_orphans_sweep(older_than_seconds=3600)
    assert removed == ["datasets/9/orphan.csv"]
    assert (root / "datasets/9/kept.csv").exists() and (root / "models/x/young.safetensors").exists()
    assert not (root / "datasets/9/orphan.csv").exists()


def test_orphan_sweep_keeps_the_checkpoints_of_unfinished_jobs(make_user):
    from app.jobs.models import Job, JobKind, JobState
    from app.system.services import storage_orphans_sweep

    root = Path(os.environ["STORAGE_URL"].removeprefix("file://"))
    owner = make_user("member")
    running = Job.objects.create(owner_id=owner.pk, kind=JobKind.TRAIN, state=JobState.RUNNING)
    finished = Job.objects.create(owner_id=owner.pk, kind=JobKind.TRAIN, state=JobState.SUCCEEDED)
    old = time.time() - 7200
    for job in (running, finished):
        path = root / job.checkpoint_key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"checkpoint")
        os.utime(path, (old, old))
    removed = storage_orphans_sweep(older_than_seconds=3600)
    assert finished.checkpoint_key in removed and running.checkpoint_key not in removed
    assert (root / running.checkpoint_key).exists() and not (root / finished.checkpoint_key).exists()
