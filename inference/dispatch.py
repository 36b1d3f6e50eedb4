"""When the batcher dispatches: the forward-pass cost model, the arrival rate, the CPU gauge, the
adaptive "does waiting pay" decision and the p99 tuner.

Internal to `inference.batcher`; the algorithm, and why, is in docs/batching.md. Everything here is
plain arithmetic on the batcher's clock, called on the batcher's event loop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

__all__ = ["Arrivals", "CostModel", "CpuGauge", "Tuner", "adaptive_close_at", "deadline_close_at"]

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


class CostModel:
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


class Arrivals:
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


class CpuGauge:
    """Share of the process's cores busy, sampled at most every `_CPU_SAMPLE_S` and smoothed."""

    __slots__ = ("at", "busy", "cores", "cpu", "cpu_clock")

    def __init__(self, now: float, cpu_clock: Callable[[], float]) -> None:
        self.cpu_clock = cpu_clock
        try:
            self.cores = max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            self.cores = max(1, os.cpu_count() or 1)
        self.at, self.cpu = now, cpu_clock()
        self.busy = 0.0

    def saturated(self, now: float) -> bool:
        if now - self.at >= _CPU_SAMPLE_S:
            used = self.cpu_clock()
            share = (used - self.cpu) / ((now - self.at) * self.cores)
            self.busy = 0.5 * self.busy + 0.5 * share
            self.at, self.cpu = now, used
        return self.busy >= _CPU_BUSY


def adaptive_close_at(
    rows: int, now: float, close_at: float, *, arrivals: Arrivals, cost: CostModel, cpu: CpuGauge
) -> float:
    """When to dispatch ``rows`` queued rows: now unless company is expected before ``close_at`` and
    waiting for it pays:

    - latency: with cost ``fixed + per_row * b`` and the next row expected in ``gap``, waiting for it
      lowers the summed latency of the ``b`` waiting rows and the newcomer iff
      ``(b + 1) * gap + per_row * b < fixed`` (it saves the newcomer a pass of its own);
    - throughput: at the arrival rate, passes of ``b`` rows would keep the runner busier than
      `_RUNNER_BUSY_MAX` of the time, or the process's CPU is saturated: then every pass that could
      have been shared costs the requests time they need.
    """
    rate = arrivals.busy_rate(now)
    if rate <= 0:
        return now
    gap = 1.0 / rate
    if now + gap >= close_at:
        return now  # no company expected within the window
    pays = False
    if cost.known:
        fixed, per_row = cost.fixed, cost.per_row
        pays = (rows + 1) * gap + per_row * rows < fixed or rate * cost.predict(rows) / rows > _RUNNER_BUSY_MAX
    if not pays:
        pays = cpu.saturated(now)
    if not pays:
        return now
    return min(close_at, now + 2 * gap)


def deadline_close_at(close_at: float, earliest_deadline: float, next_pass: float) -> float:
    """Never wait for company past the point where the most urgent request could still finish."""
    return min(close_at, earliest_deadline - next_pass - _DEADLINE_MARGIN_S)


class Tuner:
    """The effective batch size and delay, and the p99 of the requests completed in the current
    measuring window (submit to result) that steers them under a ``target_p99_ms``."""

    __slots__ = ("batch", "delay", "p99", "window", "window_start")

    def __init__(self, now: float) -> None:
        self.window: list[float] = []
        self.window_start = now
        self.p99: float | None = None
        self.batch = 1
        self.delay = 0.0

    def reset(self, max_batch_size: int, max_delay_ms: float) -> None:
        """Effective limits restart from the (new) maxima."""
        self.batch = max_batch_size
        self.delay = max_delay_ms / 1000

    def record(self, latency: float) -> None:
        self.window.append(latency)

    def window_closed(self, now: float) -> float | None:
        """The p99 of the window if it closes at ``now`` (a new one starts), else None."""
        span = now - self.window_start
        count = len(self.window)
        full = count >= _TUNE_MIN_REQUESTS and span >= _TUNE_MIN_S
        if not (full or (span >= _TUNE_MAX_S and count >= _TUNE_FEW_REQUESTS)):
            return None
        window = sorted(self.window)
        p99 = window[min(count - 1, math.ceil(0.99 * count) - 1)]
        self.window.clear()
        self.window_start = now
        self.p99 = p99
        return p99

    def tune(
        self, p99: float, target: float, arrival_rate: float, *, max_batch_size: int, max_delay_ms: float,
        cost: CostModel,
    ) -> None:
        """Multiplicative decrease when the window's p99 is over the target, additive increase when it is
        well under; bounded by the cost model (a request may wait for the pass in flight, then its own)
        and never below the batch size that keeps up with arrivals, since a runner that cannot keep up
        only makes every latency grow."""
        batch, delay = self.batch, self.delay
        if p99 > target:
            batch = int(batch * 0.75)
            delay *= 0.5
        elif p99 < _TUNE_HEADROOM * target:
            batch += max(1, batch // 4)
            delay = max(delay * 1.5, 0.0002)
        ceiling = max_batch_size
        floor = 1
        if cost.known:
            ceiling = min(ceiling, cost.largest_within(target / 2, max_batch_size))
            for b in range(1, max_batch_size + 1):
                floor = b
                if arrival_rate * cost.predict(b) <= 0.9 * b:
                    break
            ceiling = max(ceiling, floor)
            delay = min(delay, max(0.0, target - 2 * cost.predict(min(batch, ceiling))))
        self.batch = max(floor, min(batch, ceiling))
        self.delay = max(0.0, min(delay, max_delay_ms / 1000))
