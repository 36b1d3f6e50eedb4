"""/ws/v1/events against the real server (events published from this process through Redis), and the SSE
stream of realtime/sse.py driven directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.accounts.models import User
from realtime import bus, topics
from realtime.bus import publish, publish_sync
from realtime.sse import event_stream, sse_response
from tests.support import Account, Server, login, make_jwt, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)


def _drop_topic(name: str) -> None:
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(*bus._keys(name))


class Socket:
    """A /ws/v1/events client that skips server pings unless asked for them."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, **content: Any) -> None:
        await self.ws.send(json.dumps(content))

    async def recv(self, within: float = 10, *, pings: bool = False) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), within))
            if pings or message.get("type") != "ping":
                return message

    async def subscribe(self, topic: str, since: int | None = None, epoch: str | None = None) -> dict[str, Any]:
        await self.send(op="subscribe", topic=topic, since=since, epoch=epoch)
        answer = await self.recv()
        assert answer["type"] == "subscribed" and answer["topic"] == topic, answer
        return answer

    async def events(self, count: int, within: float = 10) -> list[dict[str, Any]]:
        got = [await self.recv(within) for _ in range(count)]
        assert all("seq" in m for m in got), got
        return got

    async def nothing_more(self) -> None:
        """Asserts nothing but pings arrives before the answer to a ping op sent now."""
        await self.send(op="ping")
        assert await self.recv() == {"type": "pong"}
        with pytest.raises(TimeoutError):
            await self.recv(within=0.3)


@contextlib.asynccontextmanager
async def events_socket(server: Server, token: str, **kwargs: Any) -> AsyncIterator[Socket]:
    async with websockets.connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", token],
                                  open_timeout=20, **kwargs) as ws:
        yield Socket(ws)


@pytest.fixture
def member(make_user: Any, client: Any) -> Iterator[tuple[Account, str, str]]:
    """A member, their access token, and their user topic (dropped from Redis afterwards)."""
    account = make_user()
    topic = f"user:{account.username}"
    yield account, login(client, account)["access"], topic
    _drop_topic(topic)


@pytest.fixture(scope="module")
def tight_server(service_env: dict[str, str]) -> Iterator[Server]:
    """A server with a 16-message send buffer and a ping every second."""
    srv = start_uvicorn({**service_env, "TORCHWIRE_WS_SEND_BUFFER": "16", "TORCHWIRE_WS_PING_SECONDS": "1"})
    yield srv
    srv.stop()


def _seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


async def test_subscribe_streams_live_events_until_unsubscribed(server, member):
    _, token, topic = member
    before = await publish(topic, "note", {"i": 0})
    async with events_socket(server, token) as sock:
        answer = await sock.subscribe(topic)  # since null: from now, no replay
        assert answer == {"type": "subscribed", "topic": topic, "last_seq": 1, "epoch": before.epoch}
        sent = [await publish(topic, "note", {"i": i}) for i in range(1, 4)]
        got = await sock.events(3)
        assert got == [json.loads(e.text) for e in sent]
        assert _seqs(got) == [2, 3, 4] and got[0]["data"] == {"i": 1}
        await sock.send(op="unsubscribe", topic=topic)
        assert await sock.recv() == {"type": "unsubscribed", "topic": topic}
        await publish(topic, "note", {"i": 99})
        await sock.nothing_more()


async def test_refusals_are_errors_and_the_socket_stays_open(server, member, make_user):
    _, token, topic = member
    other = make_user()
    async with events_socket(server, token) as sock:
        for name, code in ((f"user:{other.username}", "forbidden"), ("user:nobody-" + uuid.uuid4().hex, "forbidden"),
                           ("nope:1", "unknown_topic"), ("not a topic", "unknown_topic")):
            await sock.send(op="subscribe", topic=name, since=None)
            answer = await sock.recv()
            assert answer["type"] == "error" and answer["code"] == code and answer["topic"] == name, answer
        # A user topic that exists and one that does not are refused alike.
        await sock.send(op="subscribe", topic=f"user:{other.username}")
        first = await sock.recv()
        await sock.send(op="subscribe", topic="user:nobody-" + uuid.uuid4().hex)
        second = await sock.recv()
        assert first["message"] == second["message"]
        for bad in ({"op": "dance"}, {"topic": topic}, {"op": "subscribe"}, {"op": "subscribe", "topic": 5},
                    {"op": "subscribe", "topic": topic, "since": "3"}, {"op": "subscribe", "topic": topic, "since": -1},
                    {"op": "subscribe", "topic": topic, "since": True}, {"op": "subscribe", "topic": topic, "epoch": 7},
                    {"op": "unsubscribe"}):
            await sock.send(**bad)
            answer = await sock.recv()
            assert answer["type"] == "error" and answer["code"] == "bad_request", (bad, answer)
        await sock.ws.send("not json")
        assert (await sock.recv())["code"] == "bad_json"
        await sock.subscribe(topic)
        await sock.send(op="subscribe", topic=topic)
        assert (await sock.recv())["code"] == "already_subscribed"
        event = await publish(topic, "still", {"open": True})
        assert await sock.recv() == json.loads(event.text)


async def test_admin_may_read_any_user_topic_up_to_the_limit(server, client, member, make_user):
    _, _, topic = member
    admin_token = login(client, make_user(role="admin"))["access"]
    async with events_socket(server, admin_token) as sock:
        await sock.subscribe(topic)
        event = await publish(topic, "note", {})
        assert (await sock.recv())["seq"] == event.seq
        for i in range(99):
            await sock.subscribe(f"user:someone-{i}")
        await sock.send(op="subscribe", topic="user:one-too-many")
        assert (await sock.recv())["code"] == "too_many_topics"
        await sock.send(op="unsubscribe", topic="user:someone-0")
        assert (await sock.recv())["type"] == "unsubscribed"
        await sock.subscribe("user:one-too-many")


async def test_reconnect_with_since_gets_exactly_the_missed_events(server, member):
    _, token, topic = member
    published = [await publish(topic, "e", {"i": i}) for i in range(1, 6)]
    epoch = published[0].epoch
    seen: list[int] = []
    async with events_socket(server, token) as sock:
        answer = await sock.subscribe(topic, since=2, epoch=epoch)
        assert answer["last_seq"] == 5
        seen += _seqs(await sock.events(3))
        for i in range(6, 8):
            await publish(topic, "e", {"i": i})
        seen += _seqs(await sock.events(2))
    for i in range(8, 11):  # while nobody listens
        await publish(topic, "e", {"i": i})
    async with events_socket(server, token) as sock:
        await sock.subscribe(topic, since=seen[-1], epoch=epoch)
        seen += _seqs(await sock.events(3))
        await publish(topic, "e", {"i": 11})
        last = await sock.events(1)
        seen += _seqs(last)
        assert last[0]["data"] == {"i": 11}
        await sock.nothing_more()
    assert seen == list(range(3, 12))


async def test_resuming_during_a_flood_has_no_gap_and_no_duplicate(server, member):
    _, token, topic = member
    total = 600

    async def publisher() -> None:
        for i in range(total):
            await publish(topic, "tick", {"i": i})
            if i % 10 == 0:
                await asyncio.sleep(0.002)

    flood = asyncio.create_task(publisher())
    seen: list[int] = []
    epoch: str | None = None
    try:
        for round_ in range(6):
            ws = await websockets.connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", token])
            sock = Socket(ws)
            answer = await sock.subscribe(topic, since=seen[-1] if seen else None, epoch=epoch)
            if round_ == 0:
                seen.append(answer["last_seq"])  # from now: the stream starts after this
            for _ in range(40):
                message = await sock.recv()
                seen.append(message["seq"])
                epoch = message["epoch"]
            ws.transport.abort()  # the connection drops mid-stream
            await ws.wait_closed()
        async with events_socket(server, token) as sock:
            await sock.subscribe(topic, since=seen[-1], epoch=epoch)
            await flood
            while seen[-1] < total:
                seen.append((await sock.recv())["seq"])
    finally:
        flood.cancel()
    assert seen == list(range(seen[0], total + 1))


async def test_a_trimmed_position_gets_a_reset_with_the_snapshot(server, member, settings):
    account, token, topic = member
    settings.EVENT_LOG_MAXLEN = 10  # the publisher (this process) trims
    for i in range(300):
        last = await publish(topic, "e", {"i": i})
    async with events_socket(server, token) as sock:
        answer = await sock.subscribe(topic, since=1, epoch=last.epoch)
        assert answer["last_seq"] == 300
        reset = await sock.recv()
        assert reset == {"type": "reset", "topic": topic, "last_seq": 300, "epoch": last.epoch,
                         "snapshot": {"username": account.username}}
        live = await publish(topic, "e", {"after": "reset"})
        assert (await sock.recv())["seq"] == live.seq == 301


async def test_an_epoch_change_gets_a_reset(server, member):
    _, token, topic = member
    old = [await publish(topic, "e", {}) for _ in range(3)]
    _drop_topic(topic)  # Redis lost the topic
    new = [await publish(topic, "e", {}) for _ in range(4)]
    async with events_socket(server, token) as sock:
        # seq 1 exists in the new history too; the old epoch says it is not the one the client saw.
        await sock.subscribe(topic, since=1, epoch=old[0].epoch)
        reset = await sock.recv()
        assert (reset["type"], reset["last_seq"], reset["epoch"]) == ("reset", 4, new[0].epoch)
        # While subscribed: the live event of a new epoch brings a reset, not the event.
        _drop_topic(topic)
        newest = await publish(topic, "e", {})
        reset = await sock.recv()
        assert (reset["type"], reset["last_seq"], reset["epoch"]) == ("reset", 1, newest.epoch)
        after = await publish(topic, "e", {})
        assert (await sock.recv())["seq"] == after.seq == 2


async def test_two_hundred_subscribers_each_get_every_event(server, member):
    _, token, topic = member
    started = time.monotonic()
    sockets: list[Socket] = []
    async with contextlib.AsyncExitStack() as stack:

        async def join() -> None:
            sock = await stack.enter_async_context(events_socket(server, token))
            await sock.subscribe(topic)
            sockets.append(sock)

        await asyncio.gather(*(join() for _ in range(200)))
        sent = [await publish(topic, "e", {"i": i}) for i in range(30)]
        received = await asyncio.gather(*(sock.events(30, within=20) for sock in sockets))
    expected = [json.loads(e.text) for e in sent]
    assert len(received) == 200 and all(got == expected for got in received)
    assert time.monotonic() - started < 30


async def test_publish_sync_from_a_thread_without_a_loop_reaches_subscribers(server, member):
    _, token, topic = member
    async with events_socket(server, token) as sock:
        await sock.subscribe(topic)
        sent = await asyncio.to_thread(lambda: [publish_sync(topic, "job.progress", {"i": i}) for i in range(3)])
        assert await sock.events(3) == [json.loads(e.text) for e in sent]


async def test_server_pings(tight_server, member):
    _, token, topic = member
    async with events_socket(tight_server, token) as sock:
        await sock.subscribe(topic)
        assert await sock.recv(within=3, pings=True) == {"type": "ping"}


async def test_a_slow_consumer_is_closed_with_4008_and_resumes(tight_server, member):
    _, token, topic = member
    url = urlsplit(tight_server.ws_url)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server's buffers fill soon
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (url.hostname, url.port))
    payload = secrets.token_urlsafe(24_000)  # and no compression: the bytes must really be sent
    total = 400
    await publish(topic, "first", {})
    async with events_socket(tight_server, token, sock=raw, max_queue=1, max_size=None, compression=None) as sock:
        await sock.subscribe(topic)
        for i in range(total):  # the client reads nothing meanwhile
            last = await publish(topic, "blob", {"i": i, "payload": payload})
        received: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(await sock.recv(within=20))
        assert info.value.rcvd is not None and info.value.rcvd.code == 4008
    error = received.pop()
    assert error["type"] == "error" and error["code"] == "slow_consumer"
    got = _seqs(received)
    assert got == list(range(2, len(got) + 2)) and len(got) < total
    async with events_socket(tight_server, token, max_size=None) as sock:
        await sock.subscribe(topic, since=got[-1], epoch=last.epoch)
        rest = _seqs(await sock.events(total + 1 - got[-1], within=20))
    assert got + rest == list(range(2, total + 2))


async def test_expired_token_closes_the_events_socket_with_4401(server, member):
    account, _, topic = member
    async with events_socket(server, make_jwt(account.pk, lifetime=2)) as sock:
        await sock.subscribe(topic)
        message = await sock.recv()
        assert message["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as info:
            await sock.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


# Server-Sent Events


def _frames(chunk: bytes) -> list[dict[str, str]]:
    frames = []
    for block in chunk.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        frames.append(fields)
    return frames


class SseReader:
    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.pending: list[dict[str, str]] = []

    async def next(self, within: float = 10, *, pings: bool = False) -> dict[str, str]:
        while True:
            while not self.pending:
                self.pending = _frames(await asyncio.wait_for(anext(self.stream), within))
            frame = self.pending.pop(0)
            if pings or "comment" not in frame:
                return frame


@pytest.fixture
def sse_topic() -> Iterator[str]:
    async def authorize(user: User, name: str) -> bool:
        return name.endswith("-open")

    async def snapshot(name: str) -> dict[str, Any]:
        return {"state": "now"}

    topics.register_topic("ssetest", authorize=authorize, snapshot=snapshot)
    name = f"ssetest:{uuid.uuid4().hex[:8]}-open"
    yield name
    topics.unregister_topic("ssetest")
    _drop_topic(name)


async def test_sse_replays_after_last_event_id_then_streams_live(sse_topic):
    published = [await publish(sse_topic, "job.progress", {"i": i}) for i in range(1, 6)]
    epoch = published[0].epoch
    stream = event_stream(sse_topic, last_event_id=f"2:{epoch}", ping_seconds=0.3)
    reader = SseReader(stream)
    try:
        head = await reader.next()
        assert head["retry"] == "2000" and head["event"] == "subscribed" and "id" not in head
        assert json.loads(head["data"]) == {"type": "subscribed", "topic": sse_topic, "last_seq": 5, "epoch": epoch}
        replayed = [await reader.next() for _ in range(3)]
        assert [f["id"] for f in replayed] == [f"{n}:{epoch}" for n in (3, 4, 5)]
        assert [f["event"] for f in replayed] == ["job.progress"] * 3
        assert [f["data"] for f in replayed] == [e.text for e in published[2:]]
        live = await publish(sse_topic, "job.done", {"ok": True})
        frame = await reader.next()
        assert (frame["id"], frame["event"], frame["data"]) == (f"6:{epoch}", "job.done", live.text)
        assert await reader.next(pings=True) == {"comment": "ping"}
    finally:
        await stream.aclose()
    layer = bus.get_channel_layer()._get_layer()
    assert bus.group_name(sse_topic) not in "".join(layer.groups)


async def test_sse_from_now_names_its_position_so_a_reconnect_misses_nothing(sse_topic):
    first = await publish(sse_topic, "e", {})
    stream = event_stream(sse_topic, last_event_id=None)
    try:
        head = await SseReader(stream).next()
        assert head["id"] == f"1:{first.epoch}" and json.loads(head["data"])["last_seq"] == 1
    finally:
        await stream.aclose()


async def test_sse_resets_when_last_event_id_is_unusable(sse_topic, settings):
    settings.EVENT_LOG_MAXLEN = 5
    for _ in range(250):
        last = await publish(sse_topic, "e", {})
    for last_event_id in ("3", f"3:{last.epoch}", f"250:{'0' * 16}", "garbage"):
        stream = event_stream(sse_topic, last_event_id=last_event_id)
        reader = SseReader(stream)
        try:
            assert (await reader.next())["event"] == "subscribed"
            reset = await reader.next()
            assert reset["event"] == "reset" and reset["id"] == f"250:{last.epoch}", last_event_id
            assert json.loads(reset["data"]) == {"type": "reset", "topic": sse_topic, "last_seq": 250,
                                                 "epoch": last.epoch, "snapshot": {"state": "now"}}
        finally:
            await stream.aclose()


async def test_sse_response_checks_access_and_reads_last_event_id(sse_topic):
    from django.test import RequestFactory

    from app.core.errors import NotFound

    user = User(username="ada", role="member", is_active=True)
    request = RequestFactory().get("/api/v1/jobs/1/events")
    for name in ("ssetest:x-closed", "nope:1"):
        with pytest.raises(NotFound):
            await sse_response(request, topic=name, user=user)
    first = await publish(sse_topic, "e", {})
    second = await publish(sse_topic, "e", {})
    request = RequestFactory().get("/api/v1/jobs/1/events", headers={"Last-Event-ID": f"1:{first.epoch}"})
    response = await sse_response(request, topic=sse_topic, user=user)
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache" and response.is_async
    stream = aiter(response)
    reader = SseReader(stream)
    try:
        assert (await reader.next())["event"] == "subscribed"
        assert (await reader.next())["data"] == second.text
    finally:
        await response._iterator.aclose()  # type: ignore[attr-defined]  # the generator, below Django's wrappers
