"""/ws/v1/infer: V2 requests over one socket, many in flight, answered by id."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import websockets

from tests.support import login

pytestmark = pytest.mark.django_db(transaction=True)


def _request(i: int, rows: list[list[float]], model: str = "ws-mlp") -> str:
    flat = [x for row in rows for x in row]
    return json.dumps({"id": f"r{i}", "model": model, "inputs": [
        {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}]})


async def test_many_in_flight_answered_by_id(server, publish_model):
    model = publish_model("ws-mlp", max_delay_ms=10)
    requests = {f"r{i}": [[float(i), 1.0, -float(i), 0.5]] * (1 + i % 4) for i in range(50)}
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        for i in range(50):
            await ws.send(_request(i, requests[f"r{i}"]))
        answers: dict[str, dict] = {}
        while len(answers) < 50:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            answers[message["id"]] = message
    for rid, rows in requests.items():
        answer = answers[rid]
        assert "error" not in answer, answer
        output = answer["outputs"][0]
        assert output["shape"] == [len(rows), 3]
        expected = [x for row in model.expected(rows) for x in row]
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(output["data"], expected, strict=True))


async def test_errors_are_per_request(server, client, make_user, publish_model):
    model = publish_model("ws-err")
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        await ws.send(json.dumps({"id": "a", "model": "ws-nope", "inputs": []}))
        await ws.send(json.dumps({"id": "b", "model": "ws-err", "inputs": [
            {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}))
        await ws.send(json.dumps({"id": "c", "inputs": []}))
        await ws.send("[1, 2]")
        await ws.send(_request(4, [[1, 2, 3, 4]], model="ws-err"))
        got = {}
        for _ in range(5):
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            got[message.get("id")] = message
    assert got["a"]["code"] == "not_found"
    assert "dimension 1 must be 4" in got["b"]["error"]
    assert "model" in got["c"]["error"]
    assert got[None]["code"] == "bad_json"
    assert got["r4"]["outputs"][0]["shape"] == [1, 3]


async def test_in_flight_limit(server, publish_model):
    model = publish_model("ws-limit", max_batch_size=1, max_delay_ms=0)
    big = [[1.0, 2.0, 3.0, 4.0]] * 10
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        for i in range(80):
            await ws.send(_request(i, big, model="ws-limit"))
        refused = ok = 0
        for _ in range(80):
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message.get("code") == "too_many_in_flight":
                refused += 1
            elif "outputs" in message:
                ok += 1
    assert refused >= 1 and ok >= 64 and ok + refused == 80, (refused, ok, message)


async def test_viewer_cannot_call(server, client, make_user, publish_model):
    publish_model("ws-view")
    viewer = login(client, make_user("viewer"))["access"]
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", viewer]) as ws:
        await ws.send(_request(1, [[1, 2, 3, 4]], model="ws-view"))
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert message["code"] == "forbidden"
