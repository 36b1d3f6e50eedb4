"""Batching behaviour a caller sees over HTTP: queue limits, deadlines, hot swap, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from tests.support import bearer, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)

HEAVY = {"in_features": 256, "hidden": [1024, 1024], "out_features": 10}


def _rows(n: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((n, 256)).astype(np.float32).round(3).tolist()


async def _burst(url: str, token: str, bodies: list[dict], headers: dict | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(url, json=b, headers={**bearer(token), **(headers or {})})
                                      for b in bodies))


def test_queue_full_is_503_with_retry_after(server, publish_model):
    model = publish_model("rt-queue", config=HEAVY, max_batch_size=1, max_delay_ms=0, max_queue=16)
    url = f"{server.url}/api/v1/models/rt-queue/predict"
    httpx.post(url, json={"inputs": _rows(1)}, headers=bearer(model.token), timeout=30)  # load it
    responses = asyncio.run(_burst(url, model.token, [{"inputs": _rows(8, i)} for i in range(40)]))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    full = [r for r in responses if r.status_code == 503]
    assert full and statuses.count(200) >= 2
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "queue_full" for r in full)
    # Larger than the whole queue can ever hold: refused outright.
    too_big = httpx.post(url, json={"inputs": _rows(17)}, headers=bearer(model.token), timeout=30)
    assert too_big.status_code == 413, too_big.text


def test_deadline_passed_in_queue_is_504(server, publish_model):
    model = publish_model("rt-deadline", config=HEAVY, max_batch_size=1, max_delay_ms=0)
    url = f"{server.url}/api/v1/models/rt-deadline/predict"
    httpx.post(url, json={"inputs": _rows(1)}, headers=bearer(model.token), timeout=30)
    bodies = [{"inputs": _rows(16, i)} for i in range(12)]
    responses = asyncio.run(_burst(url, model.token, bodies, headers={"X-Request-Timeout-Ms": "30"}))
    late = [r for r in responses if r.status_code == 504]
    assert late, [r.status_code for r in responses]
    assert all(r.json()["error"]["code"] == "deadline_exceeded" for r in late)
    assert {r.status_code for r in responses} <= {200, 504}


def test_hot_swap_under_load_fails_no_request(server, publish_model):
    model = publish_model("rt-swap", seeds=(0, 1), promote=False)
    token = model.token
    url = f"{server.url}/api/v1/models/rt-swap/predict"
    promote = f"{server.url}/api/v1/models/rt-swap/versions/{{}}/promote"
    assert httpx.post(promote.format(1), json={"stage": "production"}, headers=bearer(token)).status_code == 200
    rows = [[0.5, -0.5, 1.0, 2.0]]
    import torch

    from inference.architectures import build

    expected = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            expected[seed + 1] = build("mlp", {"in_features": 4, "hidden": [8], "out_features": 3})(
                torch.tensor(rows)).tolist()

    results: list[tuple[int, int, list]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(url, json={"inputs": rows}, headers=bearer(token))
                body = r.json()
                results.append((r.status_code, body.get("version", -1), body.get("outputs")))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert httpx.post(promote.format(2), json={"stage": "production"}, headers=bearer(token)).status_code == 200
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(results) > 50
    assert all(status == 200 for status, _, _ in results), {s for s, _, _ in results}
    versions = [v for _, v, _ in results]
    assert versions[0] == 1 and versions[-1] == 2
    for _, version, outputs in results:
        assert np.allclose(outputs, expected[version], atol=1e-5)


def test_graceful_shutdown_finishes_queued_work(service_env, make_user, client, publish_model):
    model = publish_model("rt-drain", config=HEAVY, max_batch_size=4, max_delay_ms=0)
    srv = start_uvicorn({**service_env, "TORCHWIRE_DRAIN_SECONDS": "20", "TORCHWIRE_SHUTDOWN_DELAY_SECONDS": "2"})
    url = f"{srv.url}/api/v1/models/rt-drain/predict"
    try:
        assert httpx.post(url, json={"inputs": _rows(1)}, headers=bearer(model.token), timeout=30).status_code == 200

        async def scenario() -> tuple[list[httpx.Response], int]:
            async with httpx.AsyncClient(timeout=60) as c:
                tasks = [asyncio.create_task(c.post(url, json={"inputs": _rows(64, i)}, headers=bearer(model.token)))
                         for i in range(12)]
                # Signal only once work is really queued (a loaded machine may take a while to parse).
                for _ in range(200):
                    text = (await c.get(f"{srv.url}/metrics")).text
                    queued = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                 if line.startswith('torchwire_batch_queue_rows{model="rt-drain"'))
                    if queued > 0:
                        break
                    await asyncio.sleep(0.05)
                srv.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                ready = await c.get(f"{srv.url}/readyz")
                return list(await asyncio.gather(*tasks)), ready.status_code

        responses, ready_status = asyncio.run(scenario())
        statuses = [r.status_code for r in responses]
        # Work that was queued when the signal came finishes; requests that arrive later are refused
        # with 503 (never dropped, never a 500).
        assert statuses.count(200) >= 1, statuses
        assert set(statuses) <= {200, 503}, statuses
        assert all(r.json()["error"]["code"] == "shutting_down" for r in responses if r.status_code == 503)
        assert ready_status == 503
        # uvicorn re-raises the signal after a clean shutdown, so the exit status is "killed by SIGTERM".
        assert srv.proc.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in srv.log_tail(200)
    finally:
        srv.stop()
