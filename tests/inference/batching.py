"""Scripted runners, observers and clocks shared by the batcher tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from inference.batcher import BatchConfig, Batcher, BatchObserver

from .vtime import VirtualTimeLoop


class ScriptedRunner:
    """Doubles its input; records every batch; can be held at a gate or made to fail."""

    def __init__(self, compute_s: float = 0.0, fail_if: Callable[[np.ndarray], bool] | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.compute_s = compute_s
        self.fail_if = fail_if

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x.copy())
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.compute_s:
            await asyncio.sleep(self.compute_s)
        if self.fail_if is not None and self.fail_if(x):
            raise RuntimeError("CUDA out of memory (simulated)")
        return {"y": x * 2}

    @property
    def seen(self) -> set[float]:
        return {float(v) for b in self.batches for v in b[:, 0]}


def rows(*values: float, width: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.repeat(np.array(values, dtype=np.float64)[:, None], width, axis=1)}


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.batches: list[tuple[int, int, float]] = []
        self.rejections: list[str] = []

    def queue_depth(self, rows: int) -> None:
        self.depths.append(rows)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        self.batches.append((rows, requests, compute_seconds))

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)


async def started(runner: object, **config: Any) -> Batcher:
    batcher = Batcher(runner, BatchConfig(**config))  # type: ignore[arg-type]
    await batcher.start()
    return batcher


async def started_virtual(runner: object, **config: Any) -> Batcher:
    """A started batcher on the running loop's clock: with `run_virtual`, timing assertions hold exactly
    however loaded the machine is."""
    batcher = Batcher(runner, BatchConfig(**config), clock=asyncio.get_running_loop().time)  # type: ignore[arg-type]
    await batcher.start()
    return batcher


def run_virtual(main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


async def until(predicate: Callable[[], bool]) -> None:
    # Polls internal state that has no event to wait on; bounded so a broken test fails, not hangs.
    async with asyncio.timeout(2.0):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
