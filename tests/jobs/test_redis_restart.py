"""A Redis restart in the middle of a job: the job completes, and a subscriber sees every seq or an
explicit reset, never a silent gap. Uses a private Redis (no persistence) and its own server and worker."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.envsetup import RUN_DIR, free_port, start_redis
from tests.jobs.conftest import classification_csv
from tests.support import bearer, start_celery_worker, start_uvicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_redis_restart_during_job(service_env, make_user):
    port = free_port()
    redis_dir = RUN_DIR / f"redis-restart-{port}"
    redis_procs = [start_redis(port, redis_dir)]
    env = {**service_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    server = start_uvicorn(env)
    worker = start_celery_worker(env, hostname="restart-worker@%h")
    account = make_user("member")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = client.post("/api/v1/auth/token", json={"username": account.username,
                                                             "password": account.password}).json()["access"]
            dataset = client.post("/api/v1/datasets", headers=bearer(token),
                                  files={"file": ("d.csv", classification_csv(rows=3000), "text/csv")}).json()
            job = client.post("/api/v1/jobs/train", headers=bearer(token), json={
                "dataset_id": dataset["id"], "target": "label", "task": "classification", "model_name": "restart",
                "hyperparameters": {"epochs": 30, "patience": 30, "hidden": [64, 64], "batch_size": 16}}).json()

            async def subscribe() -> list[dict]:
                messages: list[dict] = []
                restarted = False
                url = f"{server.ws_url}/ws/v1/events"
                since: int | None = 0
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    try:
                        async with websockets.connect(url, subprotocols=["bearer", token]) as ws:
                            await ws.send(json.dumps({"op": "subscribe", "topic": f"job:{job['id']}",
                                                      "since": since}))
                            while True:
                                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                                if message["type"] in ("ping", "subscribed"):
                                    continue
                                messages.append(message)
                                if "seq" in message:
                                    since = message["seq"]
                                elif message["type"] == "reset":
                                    since = message["last_seq"]
                                if message["type"] in ("succeeded", "failed", "cancelled"):
                                    return messages
                                epochs = sum(1 for m in messages if m["type"] == "epoch")
                                if epochs >= 3 and not restarted:
                                    restarted = True
                                    redis_procs[-1].terminate()
                                    redis_procs[-1].wait(10)
                                    await asyncio.sleep(1.0)
                                    redis_procs.append(start_redis(port, redis_dir))
                    except (OSError, websockets.ConnectionClosed, TimeoutError):
                        await asyncio.sleep(0.5)  # the server may drop sockets while Redis is away; resume
                raise AssertionError(f"no terminal event: {messages[-3:]}")

            messages = asyncio.run(subscribe())
            state = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json()
            assert state["state"] == "succeeded", state
            versions = client.get("/api/v1/models/restart/versions", headers=bearer(token)).json()
            assert len(versions) == 1
        # Every event follows the previous one, or an explicit reset re-bases the sequence.
        expected = 1
        saw_reset = False
        for message in messages:
            if message["type"] == "reset":
                saw_reset = True
                expected = message["last_seq"] + 1
                continue
            assert message["seq"] == expected, (message, messages)
            expected += 1
        assert saw_reset, "Redis lost the log, so the client must have been told"
    finally:
        worker.terminate()
        worker.wait(30)
        server.stop()
        for proc in redis_procs:
            proc.terminate()
