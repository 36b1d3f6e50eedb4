"""ASGI lifespan for the whole app. Django's handler ignores lifespan, so this wrapper starts and stops
the process's components and tracks draining for /readyz.

The components are one ordered list, given by `asgi.py` (which names them, since app.core imports no
domain app): started first to last, stopped last to first, so each stops before what it needs. Adding
one is one `Component(...)` line in that list; nothing registers itself on import.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Component:
    """A part of a serving process with something to do at startup, at shutdown, or both. Both hooks run
    on the server's event loop; a failing ``start`` fails the startup, a failing ``stop`` is logged and
    the next component still stops."""

    name: str
    start: Hook | None = None
    stop: Hook | None = None


class _State:
    started = False
    draining = False


state = _State()


def _drain_on_signals(delay: float) -> None:
    """With ``delay`` > 0 (behind a load balancer), marks the process draining the moment SIGTERM/SIGINT
    arrives: /readyz and new inference answer 503 while queued work finishes, and the server's own
    handler (which stops listening) runs ``delay`` seconds later, so the balancer sees the 503 and stops
    sending traffic before the socket closes. A second signal skips the delay.

    With ``delay`` 0 (`make run`: nothing polls /readyz) the signal goes straight to the server, which
    stops listening at once and serves what it had accepted; only then does the lifespan shutdown mark
    the process draining. Marking it at the signal would only refuse, for the tenth of a second uvicorn
    takes to close its socket, requests that nobody could have steered elsewhere.

    Only possible from the main thread."""
    if delay <= 0 or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            again = state.draining
            state.draining = True
            if not callable(previous):
                raise SystemExit(128 + signum)
            if again:
                previous(signum, frame)
            else:
                logger.info("draining: /readyz answers 503; stopping in %.1fs", delay)
                timer = threading.Timer(delay, previous, args=(signum, frame))
                timer.daemon = True
                timer.start()

        signal.signal(sig, handler)


async def run_startup(components: Sequence[Component]) -> None:
    """Starts ``components`` in order, then arms the drain-on-signal handler and freezes the heap."""
    for component in components:
        if component.start is not None:
            await component.start()
    _drain_on_signals(settings.SHUTDOWN_DELAY_SECONDS)
    # Everything imported and built so far (Django, torch, warmed models) is long-lived: moved out of
    # the cyclic collector's reach, a full collection walks only what requests allocate. Without this
    # the collections were the serving path's tail latency (bench/RESULTS.md: heavy REST c64 p99 from
    # ~170 ms to ~65 ms).
    gc.collect()
    gc.freeze()
    state.started = True
    state.draining = False


async def run_shutdown(components: Sequence[Component]) -> None:
    """Marks the process draining (/readyz 503), then stops ``components`` in reverse order."""
    state.draining = True
    for component in reversed(components):
        if component.stop is None:
            continue
        try:
            await component.stop()
        except Exception:
            logger.exception("stopping %s failed", component.name)


ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


class LifespanApp:
    """``app`` for HTTP and websockets; the lifespan protocol starts and stops ``components`` (see
    `run_startup`, `run_shutdown`)."""

    def __init__(self, app: ASGIApp, components: Sequence[Component]) -> None:
        self.app = app
        self.components = tuple(components)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await run_startup(self.components)
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await run_shutdown(self.components)
                await send({"type": "lifespan.shutdown.complete"})
                return
