"""Dynamic batching for one model version: concurrent requests share forward passes.

Public API::

    batcher = Batcher(runner, BatchConfig(max_batch_size=32, max_delay_ms=5, max_queue=1024, timeout_ms=10_000),
                      observer=None)
    await batcher.start()
    outputs = await batcher.submit({"input": rows}, deadline=time.monotonic() + 2.0)
    batcher.queued_rows
    await batcher.drain(timeout=30.0)       # True if everything queued finished

`submit` raises `QueueFull` (with `retry_after_seconds`), `RequestTooLarge`, `DeadlineExceeded`,
`BatchFailed` or `ShuttingDown`, all from `inference.errors`. The algorithm, and why, is in
docs/batching.md. In short: requests queue per input shape; the oldest queued request waits at
most `max_delay_ms` for company; a batch closes as soon as it is full; only one batch is in
flight per runner, and the next is assembled from whatever queued meanwhile.

Everything here runs on the event loop that called `start()`; only the runner's forward pass
runs elsewhere (its own thread). Inputs are expected to be validated already (see
`signature.validate_inputs`): arrays keyed by input name with the same number of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from inference.errors import BatchFailed, DeadlineExceeded, QueueFull, RequestTooLarge, ShuttingDown

__all__ = ["BatchConfig", "BatchObserver", "Batcher", "ForwardRunner"]

logger = logging.getLogger(__name__)

# EWMA weight of the newest drain-rate sample, and the bounds of a Retry-After hint.
_RATE_ALPHA = 0.2
_RETRY_MIN_S = 0.01
_RETRY_MAX_S = 60.0
_RETRY_UNKNOWN_S = 1.0

GroupKey = tuple[tuple[str, tuple[int, ...], str], ...]


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32  # rows per forward pass
    max_delay_ms: float = 5.0  # how long the oldest queued request may wait for company
    max_queue: int = 1024  # rows waiting (not yet in a batch) before new requests are refused
    timeout_ms: float = 10_000.0  # deadline of a request submitted without one

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0:
            raise ValueError("max_delay_ms must be >= 0 and timeout_ms > 0")


class BatchObserver:
    """Statistics hooks for metrics. Subclass and override what you need.

    Called synchronously on the event loop, so implementations must be quick and must not block
    (incrementing prometheus_client metrics is fine). Exceptions are logged and swallowed.
    """

    def queue_depth(self, rows: int) -> None:
        """Rows waiting for a batch, after every change."""

    def queue_wait(self, seconds: float) -> None:
        """Per request: time from submit until its first rows entered a batch."""

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        """Per successful forward pass."""

    def rejected(self, reason: str) -> None:
        """Per request that did not get a result. `reason` is one of: ``queue_full``, ``too_large``,
        ``shutting_down``, ``deadline``, ``cancelled``, ``batch_failed``."""


class ForwardRunner(Protocol):
    async def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(eq=False)
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    key: GroupKey
    deadline: float
    enqueued: float
    future: asyncio.Future[dict[str, np.ndarray]]
    taken: int = 0  # rows handed to batches so far
    done: int = 0  # rows with results
    parts: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.rows - self.taken


@dataclass
class _Slice:
    request: _Request
    start: int
    rows: int


class Batcher:
    def __init__(
        self, runner: ForwardRunner, config: BatchConfig | None = None, observer: BatchObserver | None = None
    ) -> None:
        self.runner = runner
        self.config = config or BatchConfig()
        self._observer = observer or BatchObserver()
        # Per input-shape group, FIFO. A dict keeps groups in creation order; the oldest head wins.
        self._queues: dict[GroupKey, deque[_Request]] = {}
        self._group_rows: dict[GroupKey, int] = {}
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._draining = False
        self._drain_rate: float | None = None  # rows per second of compute, EWMA

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batch in flight)."""
        return self._queued_rows

    @property
    def drain_rate(self) -> float | None:
        """Measured rows/s (EWMA over forward passes); None before the first batch completes."""
        return self._drain_rate

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{id(self):x}")
            self._task.add_done_callback(self._on_task_done)

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None) -> dict[str, np.ndarray]:
        """Queue `inputs` and wait for their output rows.

        `deadline` is absolute, on the `time.monotonic()` clock; None means now + `timeout_ms`.
        Cancelling the awaiting task (a client that went away) withdraws rows not yet in a batch.
        """
        if self._task is None:
            raise RuntimeError("Batcher.start() has not been awaited")
        if not self._accepting:
            self._reject("shutting_down")
            raise ShuttingDown("the model is shutting down; retry on another replica or shortly")
        rows = _rows(inputs)
        limits = self.config
        if rows > limits.max_queue:
            self._reject("too_large")
            raise RequestTooLarge(
                f"request has {rows} rows; this model queues at most {limits.max_queue}",
                details={"rows": rows, "max_rows": limits.max_queue},
            )
        if self._queued_rows + rows > limits.max_queue:
            self._reject("queue_full")
            raise QueueFull(self._retry_after(rows))
        now = time.monotonic()
        if deadline is None:
            deadline = now + limits.timeout_ms / 1000
        if deadline <= now:
            self._reject("deadline")
            raise DeadlineExceeded("the request deadline passed before it was queued")

        request = _Request(
            inputs=dict(inputs),
            rows=rows,
            key=_group_key(inputs),
            deadline=deadline,
            enqueued=now,
            future=asyncio.get_running_loop().create_future(),
        )
        self._queues.setdefault(request.key, deque()).append(request)
        self._group_rows[request.key] = self._group_rows.get(request.key, 0) + rows
        self._set_queued(self._queued_rows + rows)
        self._idle.clear()
        self._wakeup.set()
        try:
            async with asyncio.timeout(deadline - now):
                return await request.future
        except TimeoutError:
            self._withdraw(request)
            self._reject("deadline")
            raise DeadlineExceeded(
                f"no result within the deadline ({(deadline - now) * 1000:.0f} ms)",
                details={"timeout_ms": round((deadline - now) * 1000)},
            ) from None
        except asyncio.CancelledError:
            self._withdraw(request)
            self._reject("cancelled")
            raise

    # A grace period, not a cancellation deadline, hence a parameter rather than asyncio.timeout.
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Stop accepting, finish queued work for up to `timeout` seconds, then fail what is left
        with `ShuttingDown` and stop. Returns True if nothing had to be failed. Idempotent."""
        self._accepting = False
        self._draining = True
        self._wakeup.set()
        clean = True
        if self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                clean = False
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for request in self._pending():
            clean = False
            self._fail(request, ShuttingDown("the model shut down before this request was computed"))
        self._queues.clear()
        self._group_rows.clear()
        self._set_queued(0)
        return clean

    # -- dispatch loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._execute(batch)

    async def _next_batch(self) -> list[_Slice]:
        delay = self.config.max_delay_ms / 1000
        while True:
            head = self._oldest()
            if head is None:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = time.monotonic()
            close_at = head.enqueued + delay
            if self._draining or now >= close_at or self._group_rows[head.key] >= self.config.max_batch_size:
                return self._take(head.key, now)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(close_at - now):
                    await self._wakeup.wait()

    def _oldest(self) -> _Request | None:
        heads = [queue[0] for queue in self._queues.values() if queue]
        return min(heads, key=lambda r: r.enqueued, default=None)

    def _take(self, key: GroupKey, now: float) -> list[_Slice]:
        queue = self._queues[key]
        capacity = self.config.max_batch_size
        batch: list[_Slice] = []
        while queue and capacity:
            request = queue[0]
            if request.future.done() or request.deadline <= now:
                # Abandoned (its task was cancelled or timed out but has not run its handler yet), or
                # expired with the loop too late to run its timeout: either way, never computed.
                if self._fail(request, DeadlineExceeded("the request deadline passed while it was queued")):
                    self._reject("deadline")
                else:
                    self._withdraw(request)
                continue
            if request.taken == 0:
                self._notify(self._observer.queue_wait, now - request.enqueued)
            # Fill the batch completely, splitting the last request if needed: its remainder goes
            # first in the next batch, which it would have waited for anyway.
            rows = min(request.remaining, capacity)
            batch.append(_Slice(request, request.taken, rows))
            request.taken += rows
            capacity -= rows
            self._group_rows[key] -= rows
            self._queued_rows -= rows
            if request.remaining == 0:
                queue.popleft()
        if not queue:
            # `_fail`/`_withdraw` may already have dropped the group (its last request was abandoned).
            self._queues.pop(key, None)
            self._group_rows.pop(key, None)
        self._set_queued(self._queued_rows)
        return batch

    async def _execute(self, batch: list[_Slice]) -> None:
        rows = sum(s.rows for s in batch)
        started = time.monotonic()
        try:
            inputs = {
                name: _stack([s.request.inputs[name][s.start : s.start + s.rows] for s in batch])
                for name in batch[0].request.inputs
            }
            outputs = await self.runner.forward(inputs)
            for name, array in outputs.items():
                if array.shape[:1] != (rows,):
                    raise ValueError(f"output {name!r} has {array.shape[:1]} rows for a batch of {rows}")
        except asyncio.CancelledError:
            for s in batch:
                self._fail(s.request, ShuttingDown("the model shut down while this request was being computed"))
            raise
        except Exception as exc:
            logger.exception("forward pass of a batch of %d rows failed", rows)
            for s in batch:
                if self._fail(s.request, BatchFailed(f"forward pass failed: {type(exc).__name__}: {exc}")):
                    self._reject("batch_failed")
            return
        elapsed = time.monotonic() - started
        self._record_rate(rows, elapsed)
        self._notify(self._observer.batch, rows, len({id(s.request) for s in batch}), elapsed)
        offset = 0
        for s in batch:
            request = s.request
            if not request.future.done():
                request.parts.append((s.start, {k: v[offset : offset + s.rows] for k, v in outputs.items()}))
                request.done += s.rows
                if request.done == request.rows:
                    request.future.set_result(_assemble(request.parts))
            offset += s.rows

    # -- bookkeeping ---------------------------------------------------------------------------

    def _withdraw(self, request: _Request) -> None:
        """Take a request's rows that are still queued out of the queue (deadline, cancel, failure)."""
        queue = self._queues.get(request.key)
        if not request.remaining or queue is None or request not in queue:
            return
        queue.remove(request)
        self._group_rows[request.key] -= request.remaining
        self._set_queued(self._queued_rows - request.remaining)
        request.taken = request.rows
        if not queue:
            del self._queues[request.key]
            del self._group_rows[request.key]
        self._wakeup.set()

    def _pending(self) -> list[_Request]:
        return [request for queue in self._queues.values() for request in queue]

    def _fail(self, request: _Request, exc: Exception) -> bool:
        if request.future.done():
            return False
        request.future.set_exception(exc)
        self._withdraw(request)
        return True

    def _retry_after(self, rows: int) -> float:
        if not self._drain_rate:
            return _RETRY_UNKNOWN_S
        excess = self._queued_rows + rows - self.config.max_queue
        return min(max(excess / self._drain_rate, _RETRY_MIN_S), _RETRY_MAX_S)

    def _record_rate(self, rows: int, seconds: float) -> None:
        sample = rows / max(seconds, 1e-6)
        previous = self._drain_rate
        self._drain_rate = sample if previous is None else _RATE_ALPHA * sample + (1 - _RATE_ALPHA) * previous

    def _set_queued(self, rows: int) -> None:
        self._queued_rows = rows
        self._notify(self._observer.queue_depth, rows)

    def _reject(self, reason: str) -> None:
        self._notify(self._observer.rejected, reason)

    def _notify(self, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("batch observer %r failed", hook)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("batcher loop died", exc_info=task.exception())
            self._accepting = False
            for request in self._pending():
                self._fail(request, BatchFailed("internal batcher error"))


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    if not inputs:
        raise ValueError("a request needs at least one input")
    counts = {a.shape[0] if a.ndim else 0 for a in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every input needs the same, non-zero number of rows (validate inputs first)")
    return counts.pop()


def _group_key(inputs: Mapping[str, np.ndarray]) -> GroupKey:
    return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in inputs.items()))


def _stack(chunks: list[np.ndarray]) -> np.ndarray:
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)


def _assemble(parts: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0][1]
    parts.sort(key=lambda p: p[0])
    return {name: np.concatenate([p[1][name] for p in parts], axis=0) for name in parts[0][1]}
