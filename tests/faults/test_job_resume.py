"""Training jobs through database blips and worker kills, on a PostgreSQL, Redis, uvicorn and Celery
worker of their own: the job ends with one version, no epoch is reported twice, and a new attempt
resumes from the last checkpoint with the same model an uninterrupted run gives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.envsetup import ROOT, RUN_DIR
from tests.jobs.conftest import classification_csv
from tests.private_services import PrivatePostgres, migrate, private_postgres, private_redis
from tests.support import Server, bearer, child_env, child_pids, start_celery_worker, start_uvicorn

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

LEASE_SECONDS = 20
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Stack:
    pg: PrivatePostgres
    server: Server
    worker: subprocess.Popen[bytes]
    worker_log: Path
    storage: Path
    token: str

    def checkpoint(self, job_id: int) -> Path:
        return self.storage / "jobs" / str(job_id) / "checkpoint.pt"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with private_postgres("jobs-pg") as pg, private_redis("jobs-redis") as redis_server:
        database_url = pg.create_database("torchwire")
        storage = RUN_DIR / f"storage-{pg.port}"
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "STORAGE_URL": f"file://{storage}",
            "TORCHWIRE_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "TORCHWIRE_JOB_REAP_SECONDS": "2",
            "LOG_LEVEL": "INFO",
            # One torch thread: on a loaded two-core host two threads spin against each other, and the
            # resumed run must use the thread count of the run it is compared with.
            "OMP_NUM_THREADS": "1",
        }
        migrate(database_url, env)
        password = f"pw-{uuid.uuid4().hex}"
        create = ("from app.accounts.services import user_create; "
                  f"user_create(username='trainer', password='{password}', role='member')")
        subprocess.run([sys.executable, "manage.py", "shell", "-c", create], cwd=ROOT, env=child_env(env),
                       check=True, capture_output=True, timeout=120)
        server = start_uvicorn(env)
        worker_log = RUN_DIR / f"celery-resume-{pg.port}.log"
        worker = start_celery_worker(env, hostname=f"resume-{pg.port}@%h", log=worker_log)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                response = client.post("/api/v1/auth/token", json={"username": "trainer", "password": password})
                assert response.status_code == 200, response.text
            yield Stack(pg, server, worker, worker_log, storage, response.json()["access"])
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            server.stop()


def _get(client: httpx.Client, token: str, path: str) -> Any:
    """The JSON of a 200, or None: during a database outage the API may fail, which is not what these
    tests are about."""
    try:
        response = client.get(path, headers=bearer(token))
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def _train(client: httpx.Client, token: str, name: str, epochs: int) -> int:
    dataset = client.post("/api/v1/datasets", headers=bearer(token),
                          files={"file": ("d.csv", classification_csv(rows=600), "text/csv")})
    assert dataset.status_code == 201, dataset.text
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset.json()["id"], "target": "label", "task": "classification", "model_name": name,
        "hyperparameters": {"epochs": epochs, "patience": epochs, "hidden": [32, 16], "batch_size": 16,
                            "dropout": 0.2}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _epoch(client: httpx.Client, token: str, job_id: int) -> int | None:
    """The last epoch the job reported (0 before the first); None once it has ended."""
    job = _get(client, token, f"/api/v1/jobs/{job_id}")
    if job is None:
        return 0
    if job["state"] in TERMINAL:
        return None
    return int(job["progress"].get("epoch", 0))


def _finished(client: httpx.Client, token: str, job_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _get(client, token, f"/api/v1/jobs/{job_id}")
        if job is not None and job["state"] in TERMINAL:
            return dict(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout:g}s")


def _events(stack: Stack, job_id: int) -> list[dict[str, Any]]:
    """The job's whole event log, as a client subscribing from seq 0 after the job ended sees it."""

    async def collect() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with websockets.connect(f"{stack.server.ws_url}/ws/v1/events",
                                      subprotocols=["bearer", stack.token]) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topic": f"job:{job_id}", "since": 0}))
            async with asyncio.timeout(60):
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] not in ("error", "reset"), message
                    if "seq" in message:
                        events.append(message)
                        if message["type"] in TERMINAL:
                            return events

    events = asyncio.run(collect())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def _epochs(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["data"]["epoch"]) for e in events if e["type"] == "epoch"]


def _versions(client: httpx.Client, token: str, name: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/models/{name}/versions", headers=bearer(token))
    assert response.status_code == 200, response.text
    return list(response.json())


def test_three_database_blips_during_training_cost_no_attempt(stack: Stack) -> None:
    log_start = stack.worker_log.stat().st_size
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        job_id = _train(client, stack.token, "blips", epochs=40)
        blipped_at: list[int] = []
        deadline = time.monotonic() + 300
        while len(blipped_at) < 3:
            epoch = _epoch(client, stack.token, job_id)
            assert epoch is not None, f"the job ended after only {len(blipped_at)} blips"
            assert time.monotonic() < deadline, f"the job made no progress after blips at epochs {blipped_at}"
            if epoch >= (blipped_at[-1] + 2 if blipped_at else 2):
                stack.pg.stop()  # fast: every connection is cut
                time.sleep(2)
                stack.pg.start()
                blipped_at.append(epoch)
            time.sleep(0.1)
        done = _finished(client, stack.token, job_id, timeout=300)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 1, done  # no blip cost the attempt (nor waited out the lease)
        assert [v["version"] for v in _versions(client, stack.token, "blips")] == [1]
    events = _events(stack, job_id)
    assert [e["type"] for e in events].count("started") == 1
    assert _epochs(events) == list(range(1, 41))  # every epoch once, through all three outages
    assert not stack.checkpoint(job_id).exists(), "the checkpoint outlived the job"
    with stack.worker_log.open("rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode(errors="replace")
    assert "Traceback" not in log, log  # retried, not failed
    print(f"blips after epochs {blipped_at}; the worker retried {log.count('retrying')} writes")


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint(stack: Stack) -> None:
    epochs = 24
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        job_id = _train(client, stack.token, "killed", epochs=epochs)
        deadline = time.monotonic() + 240
        while (epoch := _epoch(client, stack.token, job_id)) is not None and epoch < 4:
            assert time.monotonic() < deadline, "training never reached epoch 4"
            time.sleep(0.1)
        assert epoch is not None, "the job ended before the kill"
        assert stack.checkpoint(job_id).exists()
        pool = child_pids(stack.worker.pid)
        assert pool, "the prefork worker has no pool process"
        for pid in pool:
            os.kill(pid, signal.SIGKILL)

        done = _finished(client, stack.token, job_id, timeout=LEASE_SECONDS * 4 + 240)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2, done
        versions = _versions(client, stack.token, "killed")
        assert [v["version"] for v in versions] == [1]

        # The same job, never interrupted, trains the very same model.
        twin_id = _train(client, stack.token, "uninterrupted", epochs=epochs)
        twin = _finished(client, stack.token, twin_id, timeout=300)
        assert twin["state"] == "succeeded" and twin["attempts"] == 1, twin
        (twin_version,) = _versions(client, stack.token, "uninterrupted")

    events = _events(stack, job_id)
    types = [e["type"] for e in events]
    assert types.count("started") == 2 and types.count("resumed") == 1, types
    resumed = events[types.index("resumed")]
    checkpoint = int(resumed["data"]["epoch"])
    assert checkpoint >= epoch >= 4, (checkpoint, epoch)  # it resumed, not started over
    assert _epochs(events) == list(range(1, epochs + 1))  # no epoch reported twice, none missing
    second_start = [i for i, t in enumerate(types) if t == "started"][1]
    after = [int(e["data"]["epoch"]) for e in events[second_start:] if e["type"] == "epoch"]
    assert min(after) >= checkpoint  # the new attempt ran no epoch the checkpoint held

    assert versions[0]["artifact_sha256"] == twin_version["artifact_sha256"]  # bit for bit
    metrics = {k: v for k, v in done["result"]["metrics"].items() if k != "train_seconds"}
    assert metrics == {k: v for k, v in twin["result"]["metrics"].items() if k != "train_seconds"}
    assert f"job {job_id}: attempt 2 resumes after epoch {checkpoint}" in stack.worker_log.read_text()
    assert not stack.checkpoint(job_id).exists(), "the checkpoint outlived the job"
