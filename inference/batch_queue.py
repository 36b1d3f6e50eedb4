"""The batcher's queue: requests grouped by input shape, most urgent first within a group.

Internal to `inference.batcher` (which re-exports `Priority`): a group holds one heap per priority,
earliest deadline first, and the arrival order for the delay window. Nothing here awaits; it all runs
on the batcher's event loop.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GroupKey", "Priority", "Request", "ShapeGroup", "Slice", "assemble", "group_key", "row_count"]

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


@dataclass(eq=False)
class Request:
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
class Slice:
    request: Request
    start: int
    rows: int


class ShapeGroup:
    """Requests of one input shape: a heap per priority (earliest deadline first) and the arrival order
    (for the delay window). Withdrawn and fully taken requests leave lazily (``queued`` is False)."""

    __slots__ = ("arrivals", "heaps", "key", "low_rows", "rows")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.heaps: tuple[list[tuple[float, int, Request]], ...] = ([], [], [])
        self.arrivals: deque[Request] = deque()
        self.rows = 0
        self.low_rows = 0

    def push(self, request: Request, seq: int) -> None:
        heapq.heappush(self.heaps[request.priority], (request.deadline, seq, request))
        self.arrivals.append(request)
        self.rows += request.rows
        if request.priority is Priority.LOW:
            self.low_rows += request.rows

    def top(self, priority: int) -> Request | None:
        heap = self.heaps[priority]
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def oldest(self) -> Request | None:
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

    def requests(self) -> list[Request]:
        return [r for heap in self.heaps for _, _, r in heap if r.queued]


def row_count(inputs: Mapping[str, np.ndarray]) -> int:
    if not inputs:
        raise ValueError("a request needs at least one input")
    counts = {a.shape[0] if a.ndim else 0 for a in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every input needs the same, non-zero number of rows (validate inputs first)")
    return counts.pop()


def group_key(inputs: Mapping[str, np.ndarray]) -> GroupKey:
    if len(inputs) == 1:
        ((name, a),) = inputs.items()
        return ((name, a.shape[1:], a.dtype.str),)
    return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in inputs.items()))


def assemble(parts: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0][1]
    parts.sort(key=lambda p: p[0])
    return {name: np.concatenate([p[1][name] for p in parts], axis=0) for name in parts[0][1]}
