"""Redis down across a training job's last epochs and its end, with and without AOF: every subscriber
(connected over /ws/v1/events, resuming with since, SSE, fresh ``since: 0``) ends knowing the job
succeeded and never sees a silent gap: each event follows the one before, or an explicit reset.

The service (uvicorn + a Celery worker) runs against a private PostgreSQL database and a private
Redis, so no other test's relay or subscribers share its outbox or its bus.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from tests.envsetup import ROOT
from tests.jobs.conftest import classification_csv
from tests.private_services import PrivatePostgres, migrate, private_postgres, private_redis
from tests.support import bearer, child_env, start_celery_worker, start_uvicorn

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = 20
OUTAGE_FROM_EPOCH = 2


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres("outbox") as server:
        yield server


@dataclass
class View:
    """What one client knows of one topic: every message it processed, and its position."""

    name: str
    topic: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    epoch: str | None = None
    seq: int = 0
    final: str | None = None  # the job's terminal state, once the client knows it

    def apply(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "reset":
            self.epoch, self.seq = message["epoch"], message["last_seq"]
            job = (message.get("snapshot") or {}).get("job")
            if job and job["state"] in ("succeeded", "failed", "cancelled"):
                self.final = job["state"]
        elif "seq" in message:
            self.epoch, self.seq = message["epoch"], message["seq"]
            if message["type"] in ("succeeded", "failed", "cancelled"):
                self.final = message["type"]

    def resume(self) -> dict[str, Any]:
        op: dict[str, Any] = {"op": "subscribe", "topic": self.topic, "since": self.seq}
        if self.epoch is not None:
            op["epoch"] = self.epoch
        return op

    def last_event_id(self) -> str:
        return f"{self.seq}:{self.epoch}" if self.epoch else str(self.seq)

    def silent_gaps(self) -> list[str]:
        """Every event must be the next of the client's position: same epoch, seq + 1. Only a reset
        may move the position otherwise. (A client without an epoch takes the first event's.)"""
        problems, epoch, seq = [], None, 0
        for message in self.messages:
            if message["type"] == "reset":
                epoch, seq = message["epoch"], message["last_seq"]
                continue
            if message["seq"] != seq + 1 or (epoch is not None and message["epoch"] != epoch):
                problems.append(f"{self.name}: after ({epoch}, {seq}) came ({message['epoch']}, {message['seq']})")
            epoch, seq = message["epoch"], message["seq"]
        return problems

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "seq" in m]

    @property
    def resets(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "reset"]


async def ws_follow(url: str, token: str, view: View, *, until_epochs: int | None = None) -> None:
    """Subscribes and follows ``view.topic``, resubscribing from its position after any disconnect or
    error, until it knows the final state (or has seen ``until_epochs`` epoch events)."""
    while True:
        try:
            async with websockets.connect(url, subprotocols=["bearer", token], open_timeout=10) as ws:
                await ws.send(json.dumps(view.resume()))
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if message["type"] in ("ping", "subscribed"):
                        continue
                    if message["type"] == "error":
                        break  # e.g. "unavailable" while Redis is down: subscribe again
                    view.apply(message)
                    if view.final:
                        return
                    if until_epochs is not None and sum(m["type"] == "epoch" for m in view.events) >= until_epochs:
                        return
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass
        await asyncio.sleep(0.5)


async def sse_follow(url: str, token: str, view: View) -> None:
    """An EventSource: reads the stream, and after it ends or fails reconnects with Last-Event-ID."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=15.0)) as client:
        while True:
            try:
                headers = {**bearer(token), "Last-Event-ID": view.last_event_id()}
                async with client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 200:
                        frame: dict[str, str] = {}
                        async for line in response.aiter_lines():
                            if line:
                                key, _, value = line.partition(":")
                                frame[key] = value.strip()
                                continue
                            if "data" in frame and frame.get("event") != "subscribed":
                                view.apply(json.loads(frame["data"]))
                                if view.final:
                                    return
                            frame = {}
            except httpx.HTTPError:
                pass
            await asyncio.sleep(2.0)  # the stream's "retry: 2000"


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as conn:
        return conn.execute(query, args).fetchall()


def _create_member(database_url: str, username: str, password: str) -> None:
    code = ("from app.accounts.services import user_create; "
            f"user_create(username={username!r}, password={password!r}, role='member')")
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, check=True, capture_output=True,
                   env=child_env({"DATABASE_URL": database_url}), timeout=120)


@pytest.mark.parametrize("appendonly", [False, True], ids=["redis-no-persistence", "redis-aof"])
def test_redis_down_across_the_end_of_a_job(postgres: PrivatePostgres, appendonly: bool) -> None:
    database_url = postgres.create_database(f"outbox_{'aof' if appendonly else 'plain'}")
    migrate(database_url)
    username, password = f"ada-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    _create_member(database_url, username, password)
    with private_redis("outbox-redis", appendonly=appendonly) as redis_server:
        env = {"DATABASE_URL": database_url, "REDIS_URL": redis_server.url, "TORCHWIRE_WS_PING_SECONDS": "2",
               "TORCHWIRE_EVENT_RELAY_SECONDS": "0.5"}
        server = start_uvicorn(env)
        worker = start_celery_worker(env, hostname=f"outbox-{uuid.uuid4().hex[:6]}@%h")
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                token = client.post("/api/v1/auth/token",
                                    json={"username": username, "password": password}).json()["access"]
                dataset = client.post("/api/v1/datasets", headers=bearer(token),
                                      files={"file": ("d.csv", classification_csv(rows=800), "text/csv")}).json()
                job_id = client.post("/api/v1/jobs/train", headers=bearer(token), json={
                    "dataset_id": dataset["id"], "target": "label", "task": "classification",
                    "model_name": "outage", "promote": True,
                    "hyperparameters": {"epochs": EPOCHS, "patience": EPOCHS, "hidden": [32],
                                        "batch_size": 32}}).json()["id"]
            outcome = asyncio.run(_scenario(server.url, server.ws_url, token, job_id, database_url,
                                            redis_server, username))
        finally:
            worker.terminate()
            worker.wait(30)
            server.stop()

    views, outage = outcome["views"], outcome["outage"]
    job_views = [v for v in views if v.topic == f"job:{job_id}"]
    # The outage really covered the job's last epochs and its end, with events waiting in the outbox.
    assert outage["pending"] > 0 and outage["epoch"] <= EPOCHS - 5, outage
    state, result = _sql(database_url, "SELECT state, result FROM jobs_job WHERE id = %s", job_id)[0]
    assert state == "succeeded"

    for view in views:
        assert view.silent_gaps() == [], view.messages
    for view in job_views:
        assert view.final == "succeeded", (view.name, view.messages[-3:])
    user_view = next(v for v in views if v.topic.startswith("user:"))
    # A user topic's reset carries no job state: after one the client refetches (here: the job row said so).
    assert any(e["type"] == "succeeded" for e in user_view.events) or user_view.resets

    fresh_views = [v for v in views if v.name.endswith("fresh")]
    for view in fresh_views:  # since 0 after the outage: the whole current log, which ends in succeeded
        assert view.resets == [] and view.events[-1]["type"] == "succeeded", (view.name, view.messages[-3:])
    if appendonly:
        # The log survived: nobody needed a reset, and everyone got every event, the outage's included.
        for view in views:
            assert view.resets == [], view.name
        for view in job_views:
            types = [e["type"] for e in view.events]
            assert types[:2] == ["queued", "started"] and types[-1] == "succeeded", (view.name, types)
            assert [e["data"]["epoch"] for e in view.events if e["type"] == "epoch"] == list(range(1, EPOCHS + 1))
    else:
        # Redis lost the log: the clients that had a position were told (reset), none was misled.
        for view in views:
            if view.name in ("ws-live", "ws-resume", "sse"):
                assert view.resets, view.name

    # Every row was published, each with one seq: per epoch of the topic, 1, 2, 3... in the order written.
    rows = _sql(database_url, "SELECT epoch, seq, published_at IS NOT NULL FROM events_outboxevent "
                              "WHERE topic = %s ORDER BY id", f"job:{job_id}")
    assert all(published for _, _, published in rows)
    by_epoch: dict[str, list[int]] = {}
    for epoch, seq, _ in rows:
        by_epoch.setdefault(epoch, []).append(seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_epoch.values()), by_epoch
    assert len(by_epoch) == (1 if appendonly else 2), by_epoch.keys()
    assert result["version"] == 1


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.2)


async def _scenario(base_url: str, ws_base: str, token: str, job_id: int, database_url: str, redis_server: Any,
                    username: str) -> dict[str, Any]:
    ws_url, sse_url = f"{ws_base}/ws/v1/events", f"{base_url}/api/v1/jobs/{job_id}/events"
    topic = f"job:{job_id}"
    live, resume, sse = View("ws-live", topic), View("ws-resume", topic), View("sse", topic)
    user = View("ws-user", f"user:{username}")
    early = [asyncio.create_task(ws_follow(ws_url, token, live)), asyncio.create_task(sse_follow(sse_url, token, sse)),
             asyncio.create_task(_user_follow(ws_url, base_url, token, user, job_id))]
    await asyncio.wait_for(ws_follow(ws_url, token, resume, until_epochs=2), 120)  # then it goes away

    async def job_epoch() -> tuple[str, int]:
        rows = await asyncio.to_thread(_sql, database_url, "SELECT state, progress FROM jobs_job WHERE id = %s",
                                       job_id)
        return rows[0][0], int((rows[0][1] or {}).get("epoch", 0))

    async def outage_due() -> bool:
        following = all(any(m["type"] == "epoch" for m in v.messages) for v in (live, sse))
        return following and (await job_epoch())[1] >= OUTAGE_FROM_EPOCH

    async def job_over() -> bool:
        return (await job_epoch())[0] != "running"

    await _until(outage_due, 120)
    _, epoch = await job_epoch()
    await asyncio.to_thread(redis_server.stop)
    await _until(job_over, 400)
    pending = (await asyncio.to_thread(
        _sql, database_url, "SELECT count(*) FROM events_outboxevent WHERE published_at IS NULL AND topic = %s",
        topic))[0][0]
    await asyncio.sleep(1)
    await asyncio.to_thread(redis_server.start)

    fresh, fresh_sse = View("ws-fresh", topic), View("sse-fresh", topic)
    late = [asyncio.create_task(ws_follow(ws_url, token, resume)), asyncio.create_task(ws_follow(ws_url, token, fresh)),
            asyncio.create_task(sse_follow(sse_url, token, fresh_sse))]
    done, waiting = await asyncio.wait(early + late, timeout=120)
    for task in waiting:
        task.cancel()
    views = [live, resume, sse, user, fresh, fresh_sse]
    assert not waiting, [(v.name, v.messages[-2:]) for v in views if not v.final]
    for task in done:
        task.result()
    return {"views": views, "outage": {"epoch": epoch, "pending": pending}}


async def _user_follow(ws_url: str, base_url: str, token: str, view: View, job_id: int) -> None:
    """The owner's topic: done on the job's ``succeeded`` event, or after a reset (whose snapshot holds
    no job state) once a refetch of the job, what a client does then, shows it finished."""
    task = asyncio.create_task(ws_follow(ws_url, token, view))
    try:
        while not task.done():
            await asyncio.sleep(0.5)
            if view.resets and not view.final:
                try:
                    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                        job = (await client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token))).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if job.get("state") == "succeeded":
                    view.final = "succeeded"
                    return
        task.result()
    finally:
        task.cancel()
