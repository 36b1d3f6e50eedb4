"""An asyncio event loop on virtual time, for tests of timing behaviour that must not depend on how
busy the machine is: ``loop.time()`` jumps to the next timer whenever nothing is ready to run, so a
simulated second takes no wall time and every run of a seeded test is the same.

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())

Only timers advance the clock: a coroutine that waits on a thread (an executor) waits in real time.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only a thread or a socket can wake the loop
            return super().select(None)
        self.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(selector=self._virtual)

    def time(self) -> float:
        return self._virtual.now
