"""A worker's hold on a job's lease, as the worker sees it. Blocking code, for Celery workers.

The job row's lease (`services.job_claim`, `services.job_heartbeat`) decides who may run a job. A short
database outage must not cost the attempt: the heartbeat and every write the attempt makes are retried,
with backoff, for as long as the lease it last renewed still runs. Only past that (less a safety margin,
since another worker judges expiry by its own clock) is the attempt given up, so that two workers never
both believe they hold a job; the next attempt then resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

from . import services
from .models import Job

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a database that is restarting, unreachable or out of pooled connections raises.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
_MARGIN = 0.1  # of the lease, kept back from the deadline
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 5.0


class LeaseLost(Exception):
    """This worker no longer holds the job: another took it over, it was cancelled, or the database stayed
    unreachable until the lease would run out. The attempt must stop and record nothing."""


def discard_connection() -> None:
    """Closes this thread's database connection after an error: a pooled one the server dropped is then
    discarded by the pool instead of failing the next query too."""
    with contextlib.suppress(Exception):
        connection.close()


class Lease:
    """`renewed` is when the lease was last known to be extended (monotonic clock, taken before the write
    that extended it, so the real expiry is never earlier than `renewed + seconds`)."""

    def __init__(self, *, job: Job, worker: str, seconds: float, renewed: float) -> None:
        self.job = job
        self.worker = worker
        self.seconds = seconds
        self.renewed = renewed
        self.lost = threading.Event()

    @property
    def deadline(self) -> float:
        return self.renewed + self.seconds * (1 - _MARGIN)

    def check(self) -> None:
        """Raises LeaseLost once the lease is lost or may have run out."""
        if not self.lost.is_set() and time.monotonic() >= self.deadline:
            logger.error("job %s: the lease of %s ran out before it could be renewed", self.job.pk, self.worker)
            self.lost.set()
        if self.lost.is_set():
            raise LeaseLost

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """Runs `fn` (one transaction), again after a transient database error, backing off, until the
        lease would run out (then LeaseLost). Call it from the attempt's own thread."""
        delay = _FIRST_BACKOFF
        while True:
            self.check()
            try:
                return fn()
            except TRANSIENT_DB_ERRORS as exc:
                discard_connection()
                pause = min(delay, self.deadline - time.monotonic())
                if pause <= 0:
                    self.lost.set()
                    raise LeaseLost from exc
                logger.warning("job %s: %s failed (%s); retrying in %.1fs", self.job.pk, what,
                               str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, pause)
                time.sleep(pause)
                delay = min(delay * 2, _MAX_BACKOFF)

    @contextmanager
    def renewing(self) -> Iterator[Lease]:
        """Renews the lease every third of its length on a thread of its own while the block runs; a failed
        renewal is tried again with backoff until the lease would run out. Sets `lost` when it gives up or
        finds the lease taken."""
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name=f"lease-{self.job.pk}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(5)

    def _beat(self, stop: threading.Event) -> None:
        interval = max(self.seconds / 3, 0.5)
        wait, delay = interval, _FIRST_BACKOFF
        while not stop.wait(wait):
            attempted = time.monotonic()
            try:
                held = services.job_heartbeat(job=self.job, worker=self.worker)
            except Exception as exc:
                discard_connection()
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    logger.error("job %s: the lease could not be renewed (%s); giving the attempt up",
                                 self.job.pk, exc)
                    self.lost.set()
                    return
                logger.warning("job %s: renewing the lease failed (%s); retrying", self.job.pk, exc)
                wait, delay = min(delay, remaining), min(delay * 2, interval, _MAX_BACKOFF)
                continue
            finally:
                close_old_connections()
            if not held:
                self.lost.set()
                return
            self.renewed = attempted
            wait, delay = interval, _FIRST_BACKOFF
