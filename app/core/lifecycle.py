"""ASGI lifespan for the whole app. Django's handler ignores lifespan, so this wrapper runs the startup
and shutdown hooks that ``inference/`` and ``realtime/`` register, and tracks draining for /readyz."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
_startup: list[Hook] = []
_shutdown: list[Hook] = []


class _State:
    started = False
    draining = False


state = _State()


def on_startup(hook: Hook) -> Hook:
    _startup.append(hook)
    return hook


def on_shutdown(hook: Hook) -> Hook:
    """Shutdown hooks run in reverse registration order, after ``state.draining`` turns True."""
    _shutdown.append(hook)
    return hook


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


async def run_startup() -> None:
    from django.conf import settings

    for hook in _startup:
        await hook()
    _drain_on_signals(settings.SHUTDOWN_DELAY_SECONDS)
    # Everything imported and built so far (Django, torch, warmed models) is long-lived: moved out of
    # the cyclic collector's reach, a full collection walks only what requests allocate. Without this
    # the collections were the serving path's tail latency (bench/RESULTS.md: heavy REST c64 p99 from
    # ~170 ms to ~65 ms).
    gc.collect()
    gc.freeze()
    state.started = True
    state.draining = False


async def run_shutdown() -> None:
    state.draining = True
    for hook in reversed(_shutdown):
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))


ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


class LifespanApp:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await run_startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await run_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
