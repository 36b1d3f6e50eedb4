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
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from inference.errors import BatchFailed, DeadlineExceeded, QueueFull, RequestTooLarge, ShuttingDown

__all__ = ["DISPATCH_POLICIES", "BatchConfig", "BatchObserver", "Batcher", "ForwardRunner", "Priority"]

logger = logging.getLogger(__name__)

# EWMA weight of the newest drain-rate sample, and the bounds of a Retry-After hint.
_RATE_ALPHA = 0.2
_RETRY_MIN_S = 0.01
_RETRY_MAX_S = 60.0
_RETRY_UNKNOWN_S = 1.0
# Adaptive dispatch: keep waiting for company while the runner would be busier than this share of the
# time at the current batch size, or while the process's CPU is this busy (forward passes and request
# handling share the cores, so a pass that could have been shared takes CPU from the requests).
_RUNNER_BUSY_MAX = 0.5
_CPU_BUSY = 0.85
_CPU_SAMPLE_S = 0.05
# Arrivals while the batcher holds work: time constant of the decayed counts.
_ARRIVAL_TAU_S = 1.0
# The cost model forgets old passes with this weight per pass.
_COST_FORGET = 0.02
_COST_MIN_PASSES = 3
# Waiting for company ends this long before the most urgent request could no longer finish.
_DEADLINE_MARGIN_S = 0.0005
# p99 tuning: a window closes after this many requests and seconds (or the longer time with fewer).
_TUNE_MIN_REQUESTS = 100
_TUNE_MIN_S = 0.25
_TUNE_MAX_S = 2.0
_TUNE_FEW_REQUESTS = 20
_TUNE_HEADROOM = 0.75  # below this share of the target, limits grow again

DISPATCH_POLICIES = ("adaptive", "fixed")

GroupKey = tuple[tuple[str, tuple[int, ...], str], ...]


class Priority(enum.IntEnum):
    """Within a shape group, higher priority goes first; `LOW` is bounded by ``low_priority_share``."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: object) -> Priority:
        """``high``, ``normal`` or ``low`` in any case (an existing `Priority` passes); else ValueError."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            found = _PRIORITY_NAMES.get(value.strip().lower())
            if found is not None:
                return found
        raise ValueError("priority must be one of high, normal, low")


_PRIORITY_NAMES = {p.name.lower(): p for p in Priority}


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32  # rows per forward pass
    max_delay_ms: float = 5.0  # how long the oldest queued request may wait for company (an upper bound)
    max_queue: int = 1024  # rows waiting (not yet in a batch) before new requests are refused
    timeout_ms: float = 10_000.0  # deadline of a request submitted without one
    dispatch_policy: str = "adaptive"  # "adaptive": close early when waiting will not pay; "fixed": wait the delay
    target_p99_ms: float | None = None  # tune the effective batch size and delay to hold p99 under this
    low_priority_share: float = 0.25  # of each contended batch, and of the queue, low priority may take

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0:
            raise ValueError("max_delay_ms must be >= 0 and timeout_ms > 0")
        if self.dispatch_policy not in DISPATCH_POLICIES:
            raise ValueError(f"dispatch_policy must be one of {', '.join(DISPATCH_POLICIES)}")
        if self.target_p99_ms is not None and not self.target_p99_ms > 0:
            raise ValueError("target_p99_ms must be > 0 (or None)")
        if not 0 < self.low_priority_share <= 1:
            raise ValueError("low_priority_share must be in (0, 1]")


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

    def tuning(self, max_batch_size: int, max_delay_seconds: float, p99_seconds: float | None) -> None:
        """After every measuring window (see `Batcher.stats`): the effective limits in force and the p99
        of the requests completed in the window (submit to result; None when none completed)."""


class ForwardRunner(Protocol):
    async def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(eq=False)
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    key: GroupKey
    deadline: float
    enqueued: float
    priority: Priority
    future: asyncio.Future[dict[str, np.ndarray]]
    taken: int = 0  # rows handed to batches so far
    done: int = 0  # rows with results
    queued: bool = True  # rows of it still wait (False once fully taken or withdrawn)
    parts: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def remaining(self) -> int:
        return self.rows - self.taken


@dataclass
class _Slice:
    request: _Request
    start: int
    rows: int


class _Group:
    """Requests of one input shape: a heap per priority (earliest deadline first) and the arrival order
    (for the delay window). Withdrawn and fully taken requests leave lazily (``queued`` is False)."""

    __slots__ = ("arrivals", "heaps", "key", "low_rows", "rows")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.heaps: tuple[list[tuple[float, int, _Request]], ...] = ([], [], [])
        self.arrivals: deque[_Request] = deque()
        self.rows = 0
        self.low_rows = 0

    def push(self, request: _Request, seq: int) -> None:
        heapq.heappush(self.heaps[request.priority], (request.deadline, seq, request))
        self.arrivals.append(request)
        self.rows += request.rows
        if request.priority is Priority.LOW:
            self.low_rows += request.rows

    def top(self, priority: int) -> _Request | None:
        heap = self.heaps[priority]
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def oldest(self) -> _Request | None:
        while self.arrivals and not self.arrivals[0].queued:
            self.arrivals.popleft()
        return self.arrivals[0] if self.arrivals else None

    def urgency(self) -> tuple[int, float]:
        """(priority, deadline) of the request that would be taken first."""
        for priority in range(3):
            request = self.top(priority)
            if request is not None:
                return priority, request.deadline
        return 3, math.inf

    def earliest_deadline(self) -> float:
        tops = (self.top(p) for p in range(3))
        return min((r.deadline for r in tops if r is not None), default=math.inf)

    def requests(self) -> list[_Request]:
        return [r for heap in self.heaps for _, _, r in heap if r.queued]


class _CostModel:
    """Forward-pass seconds as a function of rows, ``fixed + per_row * rows``, fitted online by
    exponentially weighted least squares over recent passes. Until two batch sizes have been seen the
    whole cost counts as fixed, which only ever argues for waiting when requests come faster than
    half a pass apart."""

    __slots__ = ("fixed", "passes", "per_row", "s0", "s1", "s2", "t0", "t1")

    def __init__(self) -> None:
        self.s0 = self.s1 = self.s2 = self.t0 = self.t1 = 0.0
        self.passes = 0
        self.fixed = 0.0
        self.per_row = 0.0

    @property
    def known(self) -> bool:
        return self.passes >= _COST_MIN_PASSES

    def add(self, rows: int, seconds: float) -> None:
        keep = 1.0 - _COST_FORGET
        self.s0 = self.s0 * keep + 1.0
        self.s1 = self.s1 * keep + rows
        self.s2 = self.s2 * keep + rows * rows
        self.t0 = self.t0 * keep + seconds
        self.t1 = self.t1 * keep + rows * seconds
        self.passes += 1
        mean_b, mean_t = self.s1 / self.s0, self.t0 / self.s0
        var = self.s2 / self.s0 - mean_b * mean_b
        if var < 0.25:  # (nearly) one batch size so far
            fixed, per_row = mean_t, 0.0
        else:
            per_row = (self.t1 / self.s0 - mean_b * mean_t) / var
            fixed = mean_t - per_row * mean_b
            if per_row < 0:
                fixed, per_row = mean_t, 0.0
            elif fixed < 0:
                fixed, per_row = 0.0, mean_t / mean_b
        self.fixed, self.per_row = fixed, per_row

    def predict(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def largest_within(self, seconds: float, limit: int) -> int:
        """The largest batch (1..limit) whose pass is predicted to take at most ``seconds``."""
        if self.per_row <= 0:
            return limit if self.fixed <= seconds else 1
        return max(1, min(limit, int((seconds - self.fixed) / self.per_row)))


class _Arrivals:
    """Rows per second that arrive while the batcher already holds work (queued or computing), with
    exponentially decayed counts. That, not the plain arrival rate, says whether a queued request can
    expect company: a lone closed-loop client never sends while its request is outstanding."""

    __slots__ = ("at", "busy", "busy_rows", "busy_time", "total_rows", "total_time")

    def __init__(self, now: float) -> None:
        self.at = now
        self.busy = False
        self.busy_rows = self.busy_time = 0.0
        self.total_rows = self.total_time = 0.0

    def _advance(self, now: float) -> None:
        elapsed = now - self.at
        if elapsed <= 0:
            return
        keep = math.exp(-elapsed / _ARRIVAL_TAU_S)
        self.busy_rows *= keep
        self.total_rows *= keep
        # Decayed integral of time: what was accrued decays, the new stretch counts (nearly) whole.
        self.total_time = self.total_time * keep + _ARRIVAL_TAU_S * (1 - keep)
        if self.busy:
            self.busy_time = self.busy_time * keep + _ARRIVAL_TAU_S * (1 - keep)
        else:
            self.busy_time *= keep
        self.at = now

    def arrive(self, now: float, rows: int, busy: bool) -> None:
        self._advance(now)
        self.total_rows += rows
        if busy:
            self.busy_rows += rows

    def set_busy(self, now: float, busy: bool) -> None:
        if busy != self.busy:
            self._advance(now)
            self.busy = busy

    def busy_rate(self, now: float) -> float:
        """Rows/s arriving while busy; 0 when nothing ever arrived while busy."""
        self._advance(now)
        return self.busy_rows / self.busy_time if self.busy_time > 1e-4 else 0.0

    def rate(self, now: float) -> float:
        self._advance(now)
        return self.total_rows / self.total_time if self.total_time > 1e-4 else 0.0


class Batcher:
    def __init__(
        self,
        runner: ForwardRunner,
        config: BatchConfig | None = None,
        observer: BatchObserver | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.runner = runner
        self._observer = observer or BatchObserver()
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._groups: dict[GroupKey, _Group] = {}
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
        self._cost = _CostModel()
        self._arrivals = _Arrivals(now)
        try:
            self._cores = max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            self._cores = max(1, os.cpu_count() or 1)
        self._cpu_at = (now, cpu_clock())
        self._cpu_busy = 0.0
        # p99 window and the limits it steers.
        self._window: list[float] = []
        self._window_start = now
        self._window_p99: float | None = None
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
        self._eff_batch = config.max_batch_size
        self._eff_delay = config.max_delay_ms / 1000
        self._notify(self._observer.tuning, self._eff_batch, self._eff_delay, self._window_p99)
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
        return self._eff_batch

    @property
    def effective_max_delay_ms(self) -> float:
        return self._eff_delay * 1000

    def stats(self) -> dict[str, Any]:
        """What this batcher measured and chose, JSON-ready (times in ms)."""
        now = self._clock()
        cost = self._cost
        return {
            "dispatch_policy": self._config.dispatch_policy,
            "max_batch_size": self._config.max_batch_size,
            "max_delay_ms": self._config.max_delay_ms,
            "target_p99_ms": self._config.target_p99_ms,
            "effective_max_batch_size": self._eff_batch,
            "effective_max_delay_ms": round(self._eff_delay * 1000, 3),
            "p99_ms": None if self._window_p99 is None else round(self._window_p99 * 1000, 3),
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
        rows = _rows(inputs)
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
        request = _Request(
            inputs=dict(inputs),
            rows=rows,
            key=_group_key(inputs),
            deadline=deadline,
            enqueued=now,
            priority=priority,
            future=loop.create_future(),
        )
        group = self._groups.get(request.key)
        if group is None:
            group = self._groups[request.key] = _Group(request.key)
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

    async def _next_batch(self) -> list[_Slice]:
        while True:
            if not self._groups:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self._clock()
            ready: _Group | None = None
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

    def _ready_at(self, group: _Group, now: float) -> float:
        """When `group` should be dispatched: now (or earlier) to take a batch at once, else the time to
        look again (new arrivals look again sooner)."""
        oldest = group.oldest()
        if oldest is None or self._draining or group.rows >= self._eff_batch:
            return now
        close_at = oldest.enqueued + self._eff_delay
        cost = self._cost
        if cost.known:
            # Never wait for company past the point where the most urgent request could still finish.
            last_start = group.earliest_deadline() - cost.predict(min(group.rows + 1, self._eff_batch))
            close_at = min(close_at, last_start - _DEADLINE_MARGIN_S)
        if now >= close_at or self._config.dispatch_policy == "fixed":
            return close_at
        return self._adaptive(group.rows, now, close_at)

    def _adaptive(self, rows: int, now: float, close_at: float) -> float:
        """Dispatch now unless company is expected before ``close_at`` and waiting for it pays:

        - latency: with cost ``fixed + per_row * b`` and the next row expected in ``gap``, waiting for it
          lowers the summed latency of the ``b`` waiting rows and the newcomer iff
          ``(b + 1) * gap + per_row * b < fixed`` (it saves the newcomer a pass of its own);
        - throughput: at the arrival rate, passes of ``b`` rows would keep the runner busier than
          `_RUNNER_BUSY_MAX` of the time, or the process's CPU is saturated: then every pass that could
          have been shared costs the requests time they need.
        """
        rate = self._arrivals.busy_rate(now)
        if rate <= 0:
            return now
        gap = 1.0 / rate
        if now + gap >= close_at:
            return now  # no company expected within the window
        cost = self._cost
        pays = False
        if cost.known:
            fixed, per_row = cost.fixed, cost.per_row
            pays = (rows + 1) * gap + per_row * rows < fixed or rate * cost.predict(rows) / rows > _RUNNER_BUSY_MAX
        if not pays:
            pays = self._cpu_saturated(now)
        if not pays:
            return now
        return min(close_at, now + 2 * gap)

    def _cpu_saturated(self, now: float) -> bool:
        at, cpu = self._cpu_at
        if now - at >= _CPU_SAMPLE_S:
            used = self._cpu_clock()
            share = (used - cpu) / ((now - at) * self._cores)
            self._cpu_busy = 0.5 * self._cpu_busy + 0.5 * share
            self._cpu_at = (now, used)
        return self._cpu_busy >= _CPU_BUSY

    def _take(self, group: _Group, now: float) -> list[_Slice]:
        capacity = self._eff_batch
        # Low priority gets a bounded share of a contended batch; when nothing else waits, the rest too.
        low_quota = 0
        if group.low_rows:
            low_quota = min(group.low_rows, max(1, int(self._config.low_priority_share * capacity)))
        cost = self._cost
        finish = now + cost.predict(min(capacity, group.rows)) if cost.known else now
        batch: list[_Slice] = []
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
                batch.append(_Slice(request, request.taken, rows))
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

    async def _execute(self, batch: list[_Slice]) -> None:
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
        last: _Request | None = None
        for s in batch:
            request = s.request
            if request is not last:
                requests += 1
                last = request
            if not request.future.done():
                if s.rows == request.rows:
                    whole = outputs if len(batch) == 1 else {k: v[offset : offset + s.rows] for k, v in outputs.items()}
                    request.future.set_result(whole)
                    self._window.append(now - request.enqueued)
                else:
                    request.parts.append((s.start, {k: v[offset : offset + s.rows] for k, v in outputs.items()}))
                    request.done += s.rows
                    if request.done == request.rows:
                        request.future.set_result(_assemble(request.parts))
                        self._window.append(now - request.enqueued)
            offset += s.rows
        self._notify(self._observer.batch, rows, requests, elapsed)
        self._maybe_tune(now)

    # -- p99 target ----------------------------------------------------------------------------

    def _maybe_tune(self, now: float) -> None:
        span = now - self._window_start
        count = len(self._window)
        full = count >= _TUNE_MIN_REQUESTS and span >= _TUNE_MIN_S
        if not (full or (span >= _TUNE_MAX_S and count >= _TUNE_FEW_REQUESTS)):
            return
        window = sorted(self._window)
        p99 = window[min(count - 1, math.ceil(0.99 * count) - 1)]
        arrival_rate = self._arrivals.rate(now)
        self._window.clear()
        self._window_start = now
        self._window_p99 = p99
        target_ms = self._config.target_p99_ms
        if target_ms is not None:
            self._tune(p99, target_ms / 1000, arrival_rate)
        self._notify(self._observer.tuning, self._eff_batch, self._eff_delay, p99)

    def _tune(self, p99: float, target: float, arrival_rate: float) -> None:
        """Multiplicative decrease when the window's p99 is over the target, additive increase when it is
        well under; bounded by the cost model (a request may wait for the pass in flight, then its own)
        and never below the batch size that keeps up with arrivals, since a runner that cannot keep up
        only makes every latency grow."""
        config, cost = self._config, self._cost
        batch, delay = self._eff_batch, self._eff_delay
        if p99 > target:
            batch = int(batch * 0.75)
            delay *= 0.5
        elif p99 < _TUNE_HEADROOM * target:
            batch += max(1, batch // 4)
            delay = max(delay * 1.5, 0.0002)
        ceiling = config.max_batch_size
        floor = 1
        if cost.known:
            ceiling = min(ceiling, cost.largest_within(target / 2, config.max_batch_size))
            for b in range(1, config.max_batch_size + 1):
                floor = b
                if arrival_rate * cost.predict(b) <= 0.9 * b:
                    break
            ceiling = max(ceiling, floor)
            delay = min(delay, max(0.0, target - 2 * cost.predict(min(batch, ceiling))))
        self._eff_batch = max(floor, min(batch, ceiling))
        self._eff_delay = max(0.0, min(delay, config.max_delay_ms / 1000))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _expire(self, request: _Request) -> None:
        """The request's deadline timer: fail it now, whether it is queued or in the running pass."""
        if self._fail(request, DeadlineExceeded(
            f"no result within the deadline ({(request.deadline - request.enqueued) * 1000:.0f} ms)",
            details={"timeout_ms": round((request.deadline - request.enqueued) * 1000)},
        )):
            self._reject("deadline")

    def _withdraw(self, request: _Request) -> None:
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

    def _pending(self) -> list[_Request]:
        return [request for group in self._groups.values() for request in group.requests()]

    def _fail(self, request: _Request, exc: Exception) -> bool:
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


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    if not inputs:
        raise ValueError("a request needs at least one input")
    counts = {a.shape[0] if a.ndim else 0 for a in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every input needs the same, non-zero number of rows (validate inputs first)")
    return counts.pop()


def _group_key(inputs: Mapping[str, np.ndarray]) -> GroupKey:
    if len(inputs) == 1:
        ((name, a),) = inputs.items()
        return ((name, a.shape[1:], a.dtype.str),)
    return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in inputs.items()))


def _assemble(parts: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0][1]
    parts.sort(key=lambda p: p[0])
    return {name: np.concatenate([p[1][name] for p in parts], axis=0) for name in parts[0][1]}
