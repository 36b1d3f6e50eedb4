"""Dynamic batching for one model version: concurrent requests share forward passes.

Public API::

    batcher = Batcher(runner, BatchConfig(max_batch_size=32, max_delay_ms=5, max_queue=1024, timeout_ms=10_000,
                                          dispatch_policy="adaptive", target_p99_ms=None, low_priority_share=0.25),
                      observer=None, clock=time.monotonic)
    await batcher.start()
    outputs = await batcher.submit({"input": rows}, deadline=time.monotonic() + 2.0, priority=Priority.NORMAL)
    batcher.queued_rows; batcher.stats()       # what the batcher measured and chose
    batcher.config = new_config                # applies to the next batch
    await batcher.drain(timeout=30.0)          # True if everything queued finished
    Priority.parse("low")                      # ValueError for anything but high / normal / low

`submit` raises `QueueFull` (with `retry_after_seconds`), `RequestTooLarge`, `DeadlineExceeded`,
`BatchFailed` or `ShuttingDown`, all from `inference.errors`. The algorithm, and why, is in
docs/batching.md. In short: requests queue per input shape, most urgent first (priority, then
deadline); a batch closes when it is full, when its oldest request has waited `max_delay_ms`, or
(adaptive policy) as soon as waiting longer is not expected to pay; only one batch is in flight per
runner, and the next is assembled from whatever queued meanwhile. With `target_p99_ms` the batcher
tunes its effective batch size and delay to keep the measured p99 under the target.

Everything here runs on the event loop that called `start()`; only the runner's forward pass runs
elsewhere (its own thread). Inputs are expected to be validated already (see
`signature.validate_inputs`): arrays keyed by input name with the same number of rows. `clock`
must be the clock deadlines are given on and must advance with the loop's timers (tests pass a
virtual loop's ``loop.time``).

The queue is in `inference.batch_queue`, when to dispatch (cost model, arrivals, p99 tuner) in
`inference.dispatch`, the configuration and observer types in `inference.batch_types`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from inference.batch_queue import GroupKey, Priority, Request, ShapeGroup, Slice, assemble, group_key, row_count
from inference.batch_types import DISPATCH_POLICIES, BatchConfig, BatchObserver, ForwardRunner
from inference.dispatch import Arrivals, CostModel, CpuGauge, Tuner, adaptive_close_at, deadline_close_at
from inference.errors import BatchFailed, DeadlineExceeded, QueueFull, RequestTooLarge, ShuttingDown

__all__ = ["DISPATCH_POLICIES", "BatchConfig", "BatchObserver", "Batcher", "ForwardRunner", "Priority"]

logger = logging.getLogger(__name__)

# EWMA weight of the newest drain-rate sample, and the bounds of a Retry-After hint.
_RATE_ALPHA = 0.2
_RETRY_MIN_S = 0.01
_RETRY_MAX_S = 60.0
_RETRY_UNKNOWN_S = 1.0


class Batcher:
    def __init__(
        self, runner: ForwardRunner, config: BatchConfig | None = None, observer: BatchObserver | None = None, *,
        clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.runner = runner
        self._observer = observer or BatchObserver()
        self._clock = clock
        self._groups: dict[GroupKey, ShapeGroup] = {}
        self._queued_rows = 0
        self._low_rows = 0
        self._outstanding = 0  # submitted requests without their answer yet (queued or computing)
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._draining = False
        self._drain_rate: float | None = None  # rows per second of compute, EWMA
        now = clock()
        self._cost = CostModel()
        self._arrivals = Arrivals(now)
        self._cpu = CpuGauge(now, cpu_clock)
        self._tuner = Tuner(now)  # the p99 window and the effective limits it steers
        self._batches = 0
        self._batch_rows = 0
        self.config = config or BatchConfig()

    # -- configuration and what the batcher chose ------------------------------------------------

    @property
    def config(self) -> BatchConfig:
        return self._config

    @config.setter
    def config(self, config: BatchConfig) -> None:
        """Applies to the next batch; effective limits restart from the new maxima."""
        self._config = config
        tuner = self._tuner
        tuner.reset(config.max_batch_size, config.max_delay_ms)
        self._notify(self._observer.tuning, tuner.batch, tuner.delay, tuner.p99)
        self._wakeup.set()

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

    @property
    def effective_max_batch_size(self) -> int:
        return self._tuner.batch

    @property
    def effective_max_delay_ms(self) -> float:
        return self._tuner.delay * 1000

    def stats(self) -> dict[str, Any]:
        """What this batcher measured and chose, JSON-ready (times in ms)."""
        now = self._clock()
        cost, tuner = self._cost, self._tuner
        return {
            "dispatch_policy": self._config.dispatch_policy,
            "max_batch_size": self._config.max_batch_size,
            "max_delay_ms": self._config.max_delay_ms,
            "target_p99_ms": self._config.target_p99_ms,
            "effective_max_batch_size": tuner.batch,
            "effective_max_delay_ms": round(tuner.delay * 1000, 3),
            "p99_ms": None if tuner.p99 is None else round(tuner.p99 * 1000, 3),
            "queued_rows": self._queued_rows,
            "arrival_rows_per_s": round(self._arrivals.rate(now), 1),
            "mean_batch_rows": round(self._batch_rows / self._batches, 2) if self._batches else None,
            "compute_ms": (
                {"fixed": round(cost.fixed * 1000, 3), "per_row": round(cost.per_row * 1000, 4)}
                if cost.known else None
            ),
        }

    # -- the public calls ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{id(self):x}")
            self._task.add_done_callback(self._on_task_done)

    async def submit(
        self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: Priority = Priority.NORMAL
    ) -> dict[str, np.ndarray]:
        """Queue `inputs` and wait for their output rows.

        `deadline` is absolute, on the batcher's clock (`time.monotonic()` unless one was given); None
        means now + `timeout_ms`. Cancelling the awaiting task (a client that went away) withdraws rows
        not yet in a batch.
        """
        if self._task is None:
            raise RuntimeError("Batcher.start() has not been awaited")
        if not self._accepting:
            self._reject("shutting_down")
            raise ShuttingDown("the model is shutting down; retry on another replica or shortly")
        rows = row_count(inputs)
        limits = self._config
        if rows > limits.max_queue:
            self._reject("too_large")
            raise RequestTooLarge(
                f"request has {rows} rows; this model queues at most {limits.max_queue}",
                details={"rows": rows, "max_rows": limits.max_queue},
            )
        if self._queued_rows + rows > limits.max_queue:
            self._reject("queue_full")
            raise QueueFull(self._retry_after(self._queued_rows + rows - limits.max_queue))
        if priority is Priority.LOW:
            low_limit = max(1, int(limits.low_priority_share * limits.max_queue))
            if self._low_rows + rows > max(low_limit, rows):
                # A flood of low-priority work must not fill the queue that normal requests need.
                self._reject("queue_full")
                raise QueueFull(self._retry_after(self._low_rows + rows - low_limit))
        now = self._clock()
        if deadline is None:
            deadline = now + limits.timeout_ms / 1000
        if deadline <= now:
            self._reject("deadline")
            raise DeadlineExceeded("the request deadline passed before it was queued")
        if self._cost.known and now + self._cost.predict(rows) > deadline:
            self._reject("deadline")
            raise DeadlineExceeded(
                f"the request cannot finish within its deadline: a forward pass of {rows} row(s) takes "
                f"about {self._cost.predict(rows) * 1000:.1f} ms",
                details={"timeout_ms": round((deadline - now) * 1000)},
            )

        loop = asyncio.get_running_loop()
        request = Request(
            inputs=dict(inputs),
            rows=rows,
            key=group_key(inputs),
            deadline=deadline,
            enqueued=now,
            priority=priority,
            future=loop.create_future(),
        )
        group = self._groups.get(request.key)
        if group is None:
            group = self._groups[request.key] = ShapeGroup(request.key)
        group.push(request, next(self._seq))
        if priority is Priority.LOW:
            self._low_rows += rows
        self._arrivals.arrive(now, rows, self._outstanding > 0)
        if self._outstanding == 0:
            self._arrivals.set_busy(now, True)
        self._outstanding += 1
        self._set_queued(self._queued_rows + rows)
        self._idle.clear()
        self._wakeup.set()
        request.timer = loop.call_later(deadline - now, self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            if request.future.cancelled():  # our caller was cancelled, not the request failed
                self._withdraw(request)
                self._reject("cancelled")
            raise
        finally:
            request.timer.cancel()
            self._outstanding -= 1
            if self._outstanding == 0:
                self._arrivals.set_busy(self._clock(), False)

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
        self._groups.clear()
        self._low_rows = 0
        self._set_queued(0)
        return clean

    # -- dispatch loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._execute(batch)

    async def _next_batch(self) -> list[Slice]:
        while True:
            if not self._groups:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self._clock()
            ready: ShapeGroup | None = None
            wake_at = math.inf
            for group in list(self._groups.values()):
                at = self._ready_at(group, now)
                if at <= now:
                    if ready is None or group.urgency() < ready.urgency():
                        ready = group
                else:
                    wake_at = min(wake_at, at)
            if ready is not None:
                batch = self._take(ready, now)
                if batch:
                    return batch
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake_at - now):
                    await self._wakeup.wait()

    def _ready_at(self, group: ShapeGroup, now: float) -> float:
        """When `group` should be dispatched: now (or earlier) to take a batch at once, else the time to
        look again (new arrivals look again sooner)."""
        oldest = group.oldest()
        eff_batch = self._tuner.batch
        if oldest is None or self._draining or group.rows >= eff_batch:
            return now
        close_at = oldest.enqueued + self._tuner.delay
        cost = self._cost
        if cost.known:
            next_pass = cost.predict(min(group.rows + 1, eff_batch))
            close_at = deadline_close_at(close_at, group.earliest_deadline(), next_pass)
        if now >= close_at or self._config.dispatch_policy == "fixed":
            return close_at
        return adaptive_close_at(group.rows, now, close_at, arrivals=self._arrivals, cost=cost, cpu=self._cpu)

    def _take(self, group: ShapeGroup, now: float) -> list[Slice]:
        capacity = self._tuner.batch
        # Low priority gets a bounded share of a contended batch; when nothing else waits, the rest too.
        low_quota = 0
        if group.low_rows:
            low_quota = min(group.low_rows, max(1, int(self._config.low_priority_share * capacity)))
        cost = self._cost
        finish = now + cost.predict(min(capacity, group.rows)) if cost.known else now
        batch: list[Slice] = []
        for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
            room = capacity - (low_quota if priority is not Priority.LOW else 0)
            while capacity and room > 0:
                request = group.top(priority)
                if request is None:
                    break
                if request.future.done():
                    # Abandoned (its task was cancelled or timed out but has not run its handler yet).
                    self._withdraw(request)
                    continue
                if request.deadline <= now or request.deadline < finish:
                    # Expired, or cannot finish in time given the measured pass time: never computed.
                    expired = request.deadline <= now
                    if self._fail(request, DeadlineExceeded(
                        "the request deadline passed while it was queued" if expired else
                        "the request could not finish within its deadline (queued too long for the measured "
                        "forward-pass time)"
                    )):
                        self._reject("deadline")
                    continue
                if request.taken == 0:
                    self._notify(self._observer.queue_wait, now - request.enqueued)
                # Fill the batch completely, splitting the last request if needed: its remainder stays
                # first in line for the next batch, which it would have waited for anyway.
                rows = min(request.remaining, capacity, room)
                batch.append(Slice(request, request.taken, rows))
                request.taken += rows
                capacity -= rows
                room -= rows
                group.rows -= rows
                self._queued_rows -= rows
                if priority is Priority.LOW:
                    group.low_rows -= rows
                    self._low_rows -= rows
                if request.remaining == 0:
                    request.queued = False
        if group.rows == 0:
            self._groups.pop(group.key, None)
        self._set_queued(self._queued_rows)
        return batch

    async def _execute(self, batch: list[Slice]) -> None:
        rows = sum(s.rows for s in batch)
        started = self._clock()
        try:
            first = batch[0]
            if len(batch) == 1:
                inputs = {name: a[first.start : first.start + first.rows] for name, a in first.request.inputs.items()}
            else:
                inputs = {
                    name: np.concatenate([s.request.inputs[name][s.start : s.start + s.rows] for s in batch], axis=0)
                    for name in first.request.inputs
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
        now = self._clock()
        elapsed = now - started
        self._cost.add(rows, elapsed)
        self._record_rate(rows, elapsed)
        self._batches += 1
        self._batch_rows += rows
        requests = 0
        offset = 0
        last: Request | None = None
        for s in batch:
            request = s.request
            if request is not last:
                requests += 1
                last = request
            if not request.future.done():
                if s.rows == request.rows:
                    whole = outputs if len(batch) == 1 else {k: v[offset : offset + s.rows] for k, v in outputs.items()}
                    request.future.set_result(whole)
                    self._tuner.record(now - request.enqueued)
                else:
                    request.parts.append((s.start, {k: v[offset : offset + s.rows] for k, v in outputs.items()}))
                    request.done += s.rows
                    if request.done == request.rows:
                        request.future.set_result(assemble(request.parts))
                        self._tuner.record(now - request.enqueued)
            offset += s.rows
        self._notify(self._observer.batch, rows, requests, elapsed)
        self._maybe_tune(now)

    # -- p99 target ----------------------------------------------------------------------------

    def _maybe_tune(self, now: float) -> None:
        tuner = self._tuner
        p99 = tuner.window_closed(now)
        if p99 is None:
            return
        config = self._config
        if config.target_p99_ms is not None:
            tuner.tune(p99, config.target_p99_ms / 1000, self._arrivals.rate(now), max_batch_size=config.max_batch_size,
                       max_delay_ms=config.max_delay_ms, cost=self._cost)
        self._notify(self._observer.tuning, tuner.batch, tuner.delay, p99)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _expire(self, request: Request) -> None:
        """The request's deadline timer: fail it now, whether it is queued or in the running pass."""
        if self._fail(request, DeadlineExceeded(
            f"no result within the deadline ({(request.deadline - request.enqueued) * 1000:.0f} ms)",
            details={"timeout_ms": round((request.deadline - request.enqueued) * 1000)},
        )):
            self._reject("deadline")

    def _withdraw(self, request: Request) -> None:
        """Take a request's rows that are still queued out of the queue (deadline, cancel, failure)."""
        if not request.queued:
            return
        request.queued = False
        remaining = request.remaining
        request.taken = request.rows
        group = self._groups.get(request.key)
        if group is not None:
            group.rows -= remaining
            if request.priority is Priority.LOW:
                group.low_rows -= remaining
            if group.rows == 0:
                del self._groups[request.key]
        if request.priority is Priority.LOW:
            self._low_rows -= remaining
        self._set_queued(self._queued_rows - remaining)
        self._wakeup.set()

    def _pending(self) -> list[Request]:
        return [request for group in self._groups.values() for request in group.requests()]

    def _fail(self, request: Request, exc: Exception) -> bool:
        if request.future.done():
            return False
        request.future.set_exception(exc)
        self._withdraw(request)
        return True

    def _retry_after(self, excess: int) -> float:
        if not self._drain_rate:
            return _RETRY_UNKNOWN_S
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

