"""Training checkpoints of jobs, in storage: one object per job (`Job.checkpoint_key`), replaced after
every epoch and removed when the job ends (the orphan sweep removes any a crash left behind once the
job is finished). Blocking: for Celery workers.

A checkpoint is an optimisation, never the truth: one that cannot be written, read or applied costs
the epochs since the previous one (or since the start), not the job. The rerun epochs come out the
same (training is deterministic) and `services.job_progress` reports each epoch once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.core.storage import ObjectNotFound, StorageFull, get_storage
from tabular.training import Checkpoint, CheckpointError

from .models import Job

logger = logging.getLogger(__name__)

# Jobs of this process already told to be without checkpoints for want of space.
_full_warned: set[int] = set()


@contextmanager
def _scratch() -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix="tw-checkpoint-", suffix=".pt")
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def job_checkpoint_load(*, job: Job) -> Checkpoint | None:
    """The job's latest checkpoint, or None when there is none or it cannot be read (logged)."""
    with _scratch() as path:
        try:
            asyncio.run(get_storage().download(job.checkpoint_key, path))
            return Checkpoint.from_bytes(path.read_bytes())
        except ObjectNotFound:
            return None
        except CheckpointError as exc:
            logger.warning("job %s: ignoring its checkpoint: %s", job.pk, exc.message)
        except Exception:
            logger.exception("job %s: could not read its checkpoint; training starts over", job.pk)
    return None


def job_checkpoint_save(*, job: Job, checkpoint: Checkpoint) -> bool:
    """Replaces the job's checkpoint (each storage backend replaces an object whole, never half).
    False, logged, when storage failed: training goes on and a new attempt resumes from an older one."""
    with _scratch() as path:
        try:
            path.write_bytes(checkpoint.to_bytes())
            asyncio.run(get_storage().save_file(job.checkpoint_key, path))
        except StorageFull as exc:
            if job.pk not in _full_warned:  # once per job, not once per epoch
                _full_warned.add(job.pk)
                logger.warning("job %s: could not store the checkpoint of epoch %s (%s); training goes on",
                               job.pk, checkpoint.epoch, exc.reason)
            return False
        except Exception:
            logger.exception("job %s: could not store the checkpoint of epoch %s", job.pk, checkpoint.epoch)
            return False
    return True


def job_checkpoint_delete(*, job: Job) -> None:
    """Best effort: a checkpoint left behind is removed by the orphan sweep."""
    try:
        asyncio.run(get_storage().delete(job.checkpoint_key))
    except Exception:
        logger.exception("job %s: could not delete its checkpoint", job.pk)
