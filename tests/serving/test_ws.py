"""/ws/v1/infer: V2 requests over one socket, many in flight, answered by id."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support import login, make_jwt

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


async def test_id_version_and_v2_errors(server, publish_model):
    model = publish_model("ws-v2", seeds=(0, 1))
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        await ws.send(json.dumps({"id": 7, "model": "ws-v2", "version": 1, "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}))
        await ws.send(json.dumps({"id": "bad", "model": "ws-v2", "inputs": {"name": "input"}}))
        await ws.send(json.dumps({"id": "out", "model": "ws-v2", "outputs": [{"name": "nope"}], "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}))
        one_row = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
        await ws.send(json.dumps({"id": "low", "model": "ws-v2", "priority": "low", "inputs": one_row}))
        await ws.send(json.dumps({"id": "high", "model": "ws-v2", "parameters": {"priority": "high"},
                                  "inputs": one_row}))
        await ws.send(json.dumps({"id": "rank", "model": "ws-v2", "priority": "soon", "inputs": one_row}))
        got = {}
        for _ in range(6):
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            got[message["id"]] = message
    assert got["7"]["model_version"] == "1" and got["7"]["parameters"]["prediction_id"]
    assert got["bad"] == {"id": "bad", "code": "invalid_request", "error": "'inputs' must be a non-empty list"}
    assert got["out"]["code"] == "invalid_request" and "unknown output 'nope'" in got["out"]["error"]
    assert got["low"]["outputs"][0]["data"] == got["high"]["outputs"][0]["data"]
    assert got["rank"] == {"id": "rank", "code": "invalid_request",
                           "error": "'priority' must be one of high, normal, low"}


def _metric(server, prefix: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def test_closing_the_socket_withdraws_queued_requests(server, publish_model):
    """Requests wait for company (max_delay_ms=1000); the socket closes first; their rows are withdrawn
    and never computed."""
    model = publish_model("ws-gone", max_batch_size=64, max_delay_ms=1000, dispatch_policy="fixed")
    uri = f"{server.ws_url}/ws/v1/infer"
    async with websockets.connect(uri, subprotocols=["bearer", model.token]) as ws:
        await ws.send(_request(0, [[1, 2, 3, 4]], model="ws-gone"))
        assert "outputs" in json.loads(await asyncio.wait_for(ws.recv(), 30))
    rows = 'torchwire_batch_size_rows_sum{model="ws-gone"'
    cancelled = 'torchwire_inference_requests_total{model="ws-gone",protocol="ws",status="cancelled"'
    rows_before = await asyncio.to_thread(_metric, server, rows)
    async with websockets.connect(uri, subprotocols=["bearer", model.token]) as ws:
        for i in range(1, 4):
            await ws.send(_request(i, [[1, 2, 3, 4]], model="ws-gone"))
        await asyncio.sleep(0.2)
    for _ in range(100):
        if await asyncio.to_thread(_metric, server, cancelled) >= 3:
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(_metric, server, cancelled) == 3
    await asyncio.sleep(1.2)  # past the window the requests would have waited for
    assert await asyncio.to_thread(_metric, server, rows) == rows_before


async def test_infer_socket_closed_with_4401_when_token_expires(server, make_user, publish_model):
    publish_model("ws-expiry")
    short = make_jwt(make_user().pk, lifetime=2)
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", short]) as ws:
        await ws.send(_request(1, [[1, 2, 3, 4]], model="ws-expiry"))
        assert "outputs" in json.loads(await asyncio.wait_for(ws.recv(), 30))
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "error" and message["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
