"""A training job's events, live over /ws/v1/events and SSE, with resume by seq."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.jobs.conftest import classification_csv, wait_for_job
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = ("succeeded", "failed", "cancelled")


def _start(client, token, dataset_id, name, epochs=12):
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": name,
        "hyperparameters": {"epochs": epochs, "patience": epochs, "hidden": [32]}, "promote": True})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _collect(url: str, token: str, topic: str, since: int | None, *, stop_after: int | None = None,
                   limit_s: float = 180) -> list[dict]:
    events: list[dict] = []
    async with websockets.connect(url, subprotocols=["bearer", token], max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": topic, "since": since}))
        async with asyncio.timeout(limit_s):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] in ("subscribed", "ping"):
                    continue
                assert message["type"] != "error", message
                assert message["type"] != "reset", message
                events.append(message)
                if message["type"] in TERMINAL:
                    return events
                epochs = sum(1 for e in events if e["type"] == "epoch")
                if stop_after is not None and epochs >= stop_after:
                    return events


def test_whole_path_contiguous_events_then_predict(server, client, make_user, upload_csv, celery_worker_proc):
    account = make_user("member")
    token = login(client, account)["access"]
    dataset_id = upload_csv(token, classification_csv(rows=400))
    job_id = _start(client, token, dataset_id, "live")
    events = asyncio.run(_collect(f"{server.ws_url}/ws/v1/events", token, f"job:{job_id}", since=0))
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    types = [e["type"] for e in events]
    assert types[0] == "queued" and types[1] == "started" and types[-1] == "succeeded", types
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["data"]["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert {"train_loss", "val_loss", "metric", "elapsed_s", "eta_s"} <= set(epochs[0]["data"])
    assert all(e["topic"] == f"job:{job_id}" and "ts" in e for e in events)
    assert events[-1]["data"]["version"] == 1
    response = client.post("/api/v1/models/live/predict", headers=bearer(token),
                           json={"inputs": [{"x1": 1.5, "x2": 0.2, "city": "Oslo", "flag": True}]})
    assert response.status_code == 200 and response.json()["outputs"][0]["label"] in ("high", "low")
    # The owner's user topic carried the same lifecycle.
    user_events = asyncio.run(_collect(f"{server.ws_url}/ws/v1/events", token, f"user:{account.username}",
                                       since=0, limit_s=30))
    assert user_events[-1]["type"] == "succeeded"


def test_disconnect_and_resume_with_since(server, client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=1500))
    job_id = _start(client, token, dataset_id, "resume", epochs=25)
    url, topic = f"{server.ws_url}/ws/v1/events", f"job:{job_id}"
    first = asyncio.run(_collect(url, token, topic, since=0, stop_after=2))
    assert first[-1]["type"] == "epoch"
    rest = asyncio.run(_collect(url, token, topic, since=first[-1]["seq"]))
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1)) and rest[-1]["type"] == "succeeded"


def test_other_users_cannot_subscribe(server, client, make_user, upload_csv):
    owner = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(owner, classification_csv(rows=50))
    job_id = _start(client, owner, dataset_id, "private-events")
    stranger = login(client, make_user("member"))["access"]

    async def attempt() -> dict:
        async with websockets.connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", stranger]) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topic": f"job:{job_id}", "since": 0}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    answer = asyncio.run(attempt())
    assert answer["type"] == "error" and answer["code"] == "forbidden"
    assert client.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(stranger)).status_code == 404


def test_many_subscribers_all_receive_every_event(server, client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=600))
    job_id = _start(client, token, dataset_id, "crowd", epochs=10)
    url, topic = f"{server.ws_url}/ws/v1/events", f"job:{job_id}"

    async def crowd() -> list[list[dict]]:
        return await asyncio.gather(*(_collect(url, token, topic, since=0, limit_s=240) for _ in range(200)))

    results = asyncio.run(crowd())
    expected = [e["seq"] for e in results[0]]
    assert expected == list(range(1, len(expected) + 1))
    assert all([e["seq"] for e in events] == expected for events in results)


def test_sse_stream_with_last_event_id(server, client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=300))
    job_id = _start(client, token, dataset_id, "sse", epochs=6)
    assert wait_for_job(client, token, job_id)["state"] == "succeeded"

    def read(headers: dict[str, str], query: str = "") -> list[tuple[str, dict]]:
        frames: list[tuple[str, dict]] = []
        with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job_id}/events{query}",
                          headers={**bearer(token), **headers}, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            current: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    current[key] = value.strip()
                elif line == "" and "data" in current:
                    if current.get("event") != "subscribed":
                        frames.append((current.get("id", ""), json.loads(current["data"])))
                        if frames[-1][1].get("type") in TERMINAL:
                            return frames
                    current = {}
        return frames

    everything = read({}, "?last_event_id=0")  # from the start; without an id the stream starts now
    assert [f[1]["seq"] for f in everything] == list(range(1, len(everything) + 1))
    resume_from = everything[2][0]
    tail = read({"Last-Event-ID": resume_from})
    assert [f[1]["seq"] for f in tail] == [f[1]["seq"] for f in everything[3:]]


def test_sse_ends_when_the_token_expires(server, client, make_user, upload_csv):
    from tests.support import make_jwt

    account = make_user("member")
    token = login(client, account)["access"]
    dataset_id = upload_csv(token, classification_csv(rows=50))
    job_id = _start(client, token, dataset_id, "sse-expiry")
    short = make_jwt(account.pk, lifetime=2)
    events: list[str] = []
    with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job_id}/events?last_event_id=0",
                      headers=bearer(short), timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                events.append(line.partition(":")[2].strip())
    assert events[-1] == "error" and "queued" in events
