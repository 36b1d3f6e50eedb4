"""What a batcher is configured with and what it reports to: `BatchConfig`, `BatchObserver` and the
`ForwardRunner` protocol it computes with. Re-exported by `inference.batcher`, where callers import them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["DISPATCH_POLICIES", "BatchConfig", "BatchObserver", "ForwardRunner"]

DISPATCH_POLICIES = ("adaptive", "fixed")


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


