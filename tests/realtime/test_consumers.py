"""realtime/consumers.py (and the events consumer built on it) against hostile messages: every frame is
answered, a bad one with an error frame, the socket keeps working, and whatever way a consumer ends its
background tasks end with it."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from asgiref.testing import ApplicationCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import jsonio
from realtime.consumers import AuthenticatedConsumer, EchoConsumer
from realtime.events import EventsConsumer
from tests.support import Server, login

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 10_000 + "]" * 10_000
INPUT = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


async def _recv(ws: Any, within: float = 30) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
        if message.get("type") != "ping":
            return message


@pytest.fixture
def no_traceback(server: Server) -> Iterator[None]:
    """Client mistakes leave no traceback in the server's log. Waits for the server's monitoring
    recorder to write what the test's requests left it first: that is logged too, and a flush of the
    test database while it writes can deadlock with it."""
    from django.conf import settings

    offset = server.log_size()
    yield
    time.sleep(settings.PREDICTION_FLUSH_SECONDS + 1)
    logged = server.log_since(offset)
    assert "Traceback" not in logged, logged[-6000:]


# --- /ws/v1/infer ---------------------------------------------------------------------------------


async def test_infer_socket_answers_bad_frames_and_keeps_working(server, publish_model, no_traceback):
    model = publish_model("ws-hostile")
    frames: list[str | bytes] = [
        DEEP,
        '{"id": "deep", "model": "ws-hostile", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
        '"data": ' + "[" * 5000 + "]" * 5000 + "}]}",
        "x" * (1024 * 1024 + 1),
        b"\xff\xfe{",
        '{"id": 1' + "0" * 400 + ', "nan": NaN}',  # an id past 64 bits (only json.loads reads it)
    ]
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token],
                                  max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
            answer = await _recv(ws)
            assert answer.get("code") in ("too_deep", "too_large", "bad_json", "invalid_request"), answer
            assert "error" in answer or answer.get("type") == "error"
        await ws.send(json.dumps({"id": "ok", "model": "ws-hostile", "inputs": [INPUT]}))
        answer = await _recv(ws)
        assert answer["id"] == "ok" and answer["outputs"][0]["shape"] == [1, 3], answer


NOT_VERSIONS: list[object] = ["\u00b2", "\u0661", "1" * 5001, 0, -1, 2**31, 1.5, True, [1], "1.0", " 1"]


async def test_infer_versions_that_are_not_versions_get_one_error_each(server, publish_model, no_traceback):
    model = publish_model("ws-hostile-version")
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        for version in NOT_VERSIONS:
            await ws.send(json.dumps({"id": "v", "model": "ws-hostile-version", "version": version,
                                      "inputs": [INPUT]}))
            answer = await _recv(ws)
            assert answer == {"id": "v", "code": "invalid_request",
                              "error": "model version must be an integer from 1 to 2147483647"}, version
        await ws.send(json.dumps({"id": "w", "model": "ws-hostile-version", "version": "1", "inputs": [INPUT]}))
        assert (await _recv(ws))["model_version"] == "1"


async def test_infer_shapes_whose_element_count_overflows_get_an_error(server, publish_model, no_traceback):
    model = publish_model("ws-hostile-shape")
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        for i, shape in enumerate(([2**32, 2**32], [0, 2**62], [2**63])):
            await ws.send(json.dumps({"id": i, "model": "ws-hostile-shape", "inputs": [dict(INPUT, shape=shape,
                                                                                         data=[])]}))
            answer = await _recv(ws)
            assert answer == {"id": str(i), "code": "invalid_request",
                              "error": "input 'input': shape describes more than 2147483647 elements"}


ID = st.text(max_size=4) | st.integers(-(2**63), 2**64 - 1) | st.sampled_from(
    [None, 1.5, True, [1], {"a": 1}, 2**64, -(2**63) - 1])
VERSION = st.sampled_from([1, "1", 2, "\u00b2", "\u0661", "1" * 5001, 0, -1, 2**31, 1.5, True, [1], None, "x"])
SHAPE = st.sampled_from([[1, 4], [2, 4], [1, 3], [2**32, 2**32], [0, 2**63], [2**63], [-1], "x", [1.5, 4]])
TENSOR = st.fixed_dictionaries({"name": st.sampled_from(["input", "other"]), "shape": SHAPE,
                                "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "nope"]),
                                "data": st.sampled_from([[1, 2, 3, 4], [], [[1, 2, 3, 4]], ["a"], [None], 5])})
MESSAGE = st.fixed_dictionaries({"model": st.sampled_from(["ws-prop", "ws-none", "", 5])}, optional={
    "id": ID, "version": VERSION, "inputs": st.lists(TENSOR, max_size=2) | st.just(5),
    "parameters": st.sampled_from([{"timeout": 10**30}, {"timeout": -1}, {"binary_data_output": 1}, "x"]),
    "outputs": st.sampled_from([[{"name": "output"}], [{"name": "nope"}], "x"]),
}).map(json.dumps) | st.sampled_from([
    "not json", "[1, 2]", "", DEEP, '{"id": "deep", "x": ' + DEEP + "}", '{"id": 1' + "0" * 400 + ', "x": NaN}',
    '{"id": "nan", "model": "ws-prop", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
    '"data": [NaN, 1, 2, 3]}]}',
])


def _expected_id(text: str) -> str | None:
    """The id the answer to ``text`` must carry: None when the message has no usable id."""
    try:
        content = jsonio.loads(text)
    except ValueError:
        return None
    if not isinstance(content, dict):
        return None
    raw = content.get("id")
    if isinstance(raw, str):
        return raw
    if type(raw) is int and -(2**63) <= raw < 2**64:
        return str(raw)
    return None


async def _exchange(server: Server, token: str, messages: list[str]) -> list[dict[str, Any]]:
    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", token]) as ws:
        for text in messages:
            await ws.send(text)
        answers = [await _recv(ws) for _ in messages]
        with pytest.raises(TimeoutError):  # and nothing more
            await _recv(ws, within=0.5)
    return answers


def test_every_infer_message_gets_exactly_one_answer(server, publish_model, no_traceback):
    """For arbitrary messages (well formed or not, good versions and shapes or hostile ones), each gets
    exactly one answer frame, and every message with a usable id gets one answer with that id."""
    model = publish_model("ws-prop")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages=st.lists(MESSAGE, min_size=1, max_size=10))
    def check(messages: list[str]) -> None:
        answers = asyncio.run(_exchange(server, model.token, messages))
        assert len(answers) == len(messages)
        expected = Counter(i for i in map(_expected_id, messages) if i is not None)
        assert Counter(a["id"] for a in answers if a.get("id") is not None) == expected, answers
        for answer in answers:
            assert "outputs" in answer or answer.get("code"), answer

    check()


# --- /ws/v1/events --------------------------------------------------------------------------------


async def test_events_socket_answers_bad_frames_and_keeps_working(server, make_user, client, no_traceback):
    account = make_user()
    token = login(client, account)["access"]
    async with websockets.connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", token]) as ws:
        for frame, code in ((DEEP, "too_deep"), ('{"op": "ping", "x": ' + DEEP + "}", "too_deep"),
                            ("y" * (1024 * 1024 + 1), "too_large"), (b"\xff\xfe{", "bad_json"),
                            ('{"op": "subscribe", "topic": ' + "[" * 100 + "]" * 100 + "}", "too_deep"),
                            (f'{{"op": "subscribe", "topic": "user:{account.username}", "since": 1{"0" * 400}, '
                             '"n": NaN}', "bad_request")):
            await ws.send(frame)
            answer = await _recv(ws)
            assert answer["type"] == "error" and answer["code"] == code, answer
        for topic in ("job:\u00b2", "job:\u0661", "job:" + "9" * 199):  # digits int() refuses, or that alias 1
            await ws.send(json.dumps({"op": "subscribe", "topic": topic}))
            answer = await _recv(ws)
            assert answer["code"] == "forbidden" and answer["topic"] == topic, answer
        await ws.send(json.dumps({"op": "ping"}))
        assert await _recv(ws) == {"type": "pong"}
        await ws.send(json.dumps({"op": "subscribe", "topic": f"user:{account.username}", "since": 0}))
        assert (await _recv(ws))["type"] == "subscribed"


# --- whatever way a consumer ends, its tasks end --------------------------------------------------


def _expiry_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if not t.done() and "_expire_at" in repr(t.get_coro())]


def _scope(user: Any) -> dict[str, Any]:
    principal = SimpleNamespace(user=user, expires_at=datetime.now(UTC) + timedelta(hours=1), via="jwt")
    return {"type": "websocket", "path": "/ws/v1/x", "headers": [], "subprotocols": [], "query_string": b"",
            "user": user, "principal": principal, "accept_subprotocol": None}


class Client:
    """A websocket client of a consumer in this process (channels.testing needs daphne)."""

    def __init__(self, consumer: type[AuthenticatedConsumer]) -> None:
        user = SimpleNamespace(username="someone", pk=1)
        self.app = ApplicationCommunicator(consumer.as_asgi(), _scope(user))

    async def connect(self) -> None:
        await self.app.send_input({"type": "websocket.connect"})
        assert (await self.app.receive_output(10))["type"] == "websocket.accept"

    async def send(self, text: str) -> None:
        await self.app.send_input({"type": "websocket.receive", "text": text})

    async def recv(self) -> dict[str, Any]:
        while True:
            message = await self.app.receive_output(10)
            assert message["type"] == "websocket.send", message
            content: dict[str, Any] = json.loads(message["text"])
            if content.get("type") != "ping":
                return content

    async def disconnect(self) -> None:
        await self.app.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.app.wait(10)


@pytest.mark.parametrize("consumer", [EchoConsumer, EventsConsumer], ids=lambda c: c.__name__)
async def test_a_handler_that_raises_is_answered_and_the_socket_lives_on(monkeypatch, consumer):
    async def broken(self: AuthenticatedConsumer, content: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(consumer, "receive_json", broken)
    client = Client(consumer)
    await client.connect()
    for _ in range(2):
        await client.send("{}")
        assert await client.recv() == {"type": "error", "code": "internal_error", "message": "internal server error"}
    assert _expiry_tasks()
    await client.disconnect()
    await asyncio.sleep(0)
    assert not _expiry_tasks()


@pytest.mark.parametrize("consumer", [EchoConsumer, EventsConsumer], ids=lambda c: c.__name__)
@pytest.mark.parametrize("ending", ["exception", "cancelled"])
async def test_a_consumer_that_stops_without_disconnect_cancels_its_tasks(monkeypatch, consumer, ending):
    """Channels calls disconnect only when the client's disconnect is dispatched; an exception that
    escapes the consumer, or its task being cancelled, used to leave the expiry task (and the events
    writer and ticker) running."""
    async def crash(self: AuthenticatedConsumer, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("a bug outside every handler")

    monkeypatch.setattr(consumer, "receive", crash)
    client = Client(consumer)
    before = {t for t in asyncio.all_tasks() if not t.done()}
    await client.connect()
    started = {t for t in asyncio.all_tasks() if not t.done()} - before
    assert _expiry_tasks()
    if ending == "exception":
        await client.send("{}")
        with pytest.raises(RuntimeError, match="a bug outside"):
            await client.app.wait(10)
    else:
        client.app.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await client.app.future
    await asyncio.sleep(0.05)
    assert not _expiry_tasks()
    assert not [t for t in started if not t.done()]
