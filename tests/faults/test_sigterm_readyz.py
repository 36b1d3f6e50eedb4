"""SIGTERM with no shutdown delay (`make run`'s default): the process stops listening and serves what it
accepted; it never answers 503 "draining" to a request it accepted, since nothing could have steered
that request elsewhere. (With a delay, /readyz turns 503 first: tests/serving/test_runtime.py.)"""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from tests.support import start_uvicorn

pytestmark = pytest.mark.faults


def test_sigterm_without_delay_refuses_nothing_it_accepted(service_env):
    server = start_uvicorn({**service_env, "TORCHWIRE_SHUTDOWN_DELAY_SECONDS": "0"})
    statuses: list[int] = []
    refused = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not refused.is_set():
                try:
                    # A new connection each time, as a load balancer's probe makes.
                    statuses.append(client.get(server.url + "/readyz", headers={"Connection": "close"}).status_code)
                except httpx.TransportError:
                    refused.set()

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    try:
        for thread in pollers:
            thread.start()
        while len(statuses) < 40 and not refused.is_set():
            refused.wait(0.05)
        server.proc.send_signal(signal.SIGTERM)
        assert refused.wait(30), "the listener never closed"
        for thread in pollers:
            thread.join(30)
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        refused.set()
        server.stop()
    assert len(statuses) >= 40 and set(statuses) == {200}, sorted(set(statuses))
    assert "Traceback" not in server.log.read_text(errors="replace")
