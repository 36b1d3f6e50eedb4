"""/healthz and /readyz against real dependencies; Redis is a private server this test may stop."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.envsetup import RUN_DIR, free_port, start_redis
from tests.support import start_uvicorn


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_all_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"] == body["redis"] == body["storage"] == "ok"


def _wait_for(url: str, status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    response = httpx.get(url, timeout=10)
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(0.2)
        response = httpx.get(url, timeout=10)
    return response


@pytest.mark.slow
def test_readyz_follows_redis_down_and_up(service_env):
    port = free_port()
    redis_proc = start_redis(port, RUN_DIR / f"redis-ready-{port}")
    server = start_uvicorn({**service_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                            "TORCHWIRE_READINESS_TIMEOUT": "1"})
    try:
        assert _wait_for(server.url + "/readyz", 200).json()["redis"] == "ok"
        redis_proc.terminate()
        redis_proc.wait(10)
        started = time.monotonic()
        down = _wait_for(server.url + "/readyz", 503)
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < 15
        body = down.json()
        assert body["redis"] != "ok" and body["database"] == "ok" and body["storage"] == "ok"
        assert httpx.get(server.url + "/healthz").status_code == 200

        redis_proc = start_redis(port, RUN_DIR / f"redis-ready-{port}")
        up = _wait_for(server.url + "/readyz", 200)
        assert up.status_code == 200, up.text
    finally:
        server.stop()
        redis_proc.terminate()
