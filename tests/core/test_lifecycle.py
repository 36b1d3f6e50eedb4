"""The lifespan starts the components in order and stops them in reverse, after /readyz turned 503."""

from __future__ import annotations

from typing import Any

import pytest

from app.core import lifecycle
from app.core.lifecycle import Component, LifespanApp


@pytest.fixture
def lifespan_state(monkeypatch):
    monkeypatch.setattr(lifecycle.gc, "freeze", lambda: None)  # the test process's heap is not long-lived
    monkeypatch.setattr(lifecycle.state, "started", False)
    monkeypatch.setattr(lifecycle.state, "draining", False)
    return lifecycle.state


async def _run_lifespan(app: LifespanApp) -> list[str]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    return sent


async def test_components_start_in_order_and_stop_in_reverse_after_draining(lifespan_state):
    calls: list[tuple[str, bool]] = []

    def hook(name: str):
        async def run() -> None:
            calls.append((name, lifespan_state.draining))
        return run

    async def broken_stop() -> None:
        raise RuntimeError("stop failed")

    components = [
        Component("a", start=hook("start a"), stop=hook("stop a")),
        Component("b", stop=broken_stop),
        Component("c", start=hook("start c"), stop=hook("stop c")),
    ]
    sent = await _run_lifespan(LifespanApp(_unused_app, components))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # Stops see the process draining; a failing stop does not keep the ones before it from stopping.
    assert calls == [("start a", False), ("start c", False), ("stop c", True), ("stop a", True)]


async def test_a_failing_start_fails_the_startup(lifespan_state):
    async def broken_start() -> None:
        raise RuntimeError("no pool")

    sent = await _run_lifespan(LifespanApp(_unused_app, [Component("pool", start=broken_start)]))
    assert sent == ["lifespan.startup.failed"] and not lifespan_state.started


async def _unused_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("only the lifespan is exercised")
