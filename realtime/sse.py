"""One topic's events as Server-Sent Events: the stream /ws/v1/events gives, for clients that only read.

Frames: ``event: <type>`` and ``data: <the event's JSON>``, with ``id: <seq>:<epoch>`` on each event, so
a reconnecting EventSource sends it back as ``Last-Event-ID`` and gets exactly what it missed. The
first frame is ``event: subscribed``; a position the log cannot serve gives ``event: reset`` with the
snapshot; comment lines (``: ping``) keep proxies from timing the stream out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import redis
from django.http import HttpRequest, StreamingHttpResponse

from app.core.db import DatabaseUnavailable
from app.core.errors import NotFound
from realtime.bus import Cursor, Event, Position, Reset, Step
from realtime.events import ping_seconds as default_ping_seconds
from realtime.events import send_buffer
from realtime.hub import Subscription, get_hub
from realtime.topics import TopicError, topic_authorize, topic_snapshot

if TYPE_CHECKING:
    from app.accounts.models import User

RETRY_MS = 2000
# What a Redis outage looks like to the clients here (redis-py wraps socket errors; OSError for the rest).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


def event_id(seq: int, epoch: str | None) -> str:
    return f"{seq}:{epoch}" if epoch else str(seq)


def parse_event_id(value: str) -> tuple[int, str | None] | None:
    """``(seq, epoch)`` from ``<seq>:<epoch>`` or a bare ``<seq>`` (then only bounds are checked); None
    if malformed."""
    seq, _, epoch = value.strip().partition(":")
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 18 or len(epoch) > 64:
        return None
    return int(seq), epoch or None


def _frame(name: str, data: str, frame_id: str | None = None) -> bytes:
    head = f"id: {frame_id}\n" if frame_id is not None else ""
    return f"{head}event: {name}\ndata: {data}\n\n".encode()


async def _render(topic: str, step: Step) -> list[bytes]:
    if isinstance(step, Reset):
        now = step.position
        snapshot = await topic_snapshot(topic=topic)
        body = {"type": "reset", "topic": topic, "last_seq": now.seq, "epoch": now.epoch, "snapshot": snapshot}
        return [_frame("reset", json.dumps(body, separators=(",", ":")), event_id(now.seq, now.epoch))]
    return [_frame(event.type, event.text, event_id(event.seq, event.epoch)) for event in step]


def _error_frame(code: str, message: str) -> bytes:
    body = json.dumps({"type": "error", "code": code, "message": message}, separators=(",", ":"))
    return _frame("error", body)


UNAVAILABLE = "the event stream is unavailable for a moment; reconnect (Last-Event-ID resumes it)"


class _QueueSink:
    """An SSE stream's end of its subscription (`realtime.hub.Sink`): a bounded queue the generator
    drains. A live event that finds it full is not lost: the subscription reads it from the log once
    the generator makes room."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event | Reset] = asyncio.Queue(maxsize=size)
        self.active = True

    def push(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False

    async def deliver(self, step: Step) -> None:
        for item in ([step] if isinstance(step, Reset) else step):
            await self.queue.put(item)


async def event_stream(topic: str, *, last_event_id: str | None = None,
                       ping_seconds: float | None = None) -> AsyncGenerator[bytes, None]:
    """The SSE byte stream of ``topic`` from ``last_event_id`` (None or empty: from now); the caller has
    checked access. Endless: it stops when its consumer is cancelled or closes it.

    Live events come from the process's hub (`realtime.hub`). Redis unreachable when the stream opens,
    or a snapshot the database cannot give: an ``error`` event (code ``unavailable``) ends the stream
    and the client reconnects after ``retry``. Redis lost while streaming: pings go on, and the hub's
    next position check after it answers again delivers what was missed (or a ``reset``), so the
    client sees no gap and need not reconnect.
    """
    interval = ping_seconds if ping_seconds is not None else default_ping_seconds()
    hub = get_hub()
    sink = _QueueSink(send_buffer())
    sub: Subscription | None = None
    try:
        resume = parse_event_id(last_event_id) if last_event_id else None

        async def opener(cursor: Cursor) -> tuple[Position, Step]:
            if not last_event_id:
                return await cursor.open(None)
            if resume is None:
                reset = await cursor.restart()
                return reset.position, reset
            return await cursor.open(*resume)

        try:
            sub, now, step = await hub.subscribe(topic, sink, opener)
        except REDIS_DOWN:
            yield f"retry: {RETRY_MS}\n".encode() + _error_frame("unavailable", UNAVAILABLE)
            return
        head: dict[str, Any] = {"type": "subscribed", "topic": topic, "last_seq": now.seq, "epoch": now.epoch}
        # Only a stream that starts from now names its position here; otherwise the client's
        # Last-Event-ID must stand until the replayed events (or the reset) replace it.
        head_id = event_id(now.seq, now.epoch) if not last_event_id else None
        yield f"retry: {RETRY_MS}\n".encode() + _frame("subscribed", json.dumps(head, separators=(",", ":")), head_id)
        for chunk in await _render(topic, step):
            yield chunk
        hub.started(sub)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + interval
        while True:
            try:
                item = await asyncio.wait_for(sink.queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                deadline = loop.time() + interval
                yield b": ping\n\n"
                continue
            for chunk in await _render(topic, item if isinstance(item, Reset) else [item]):
                yield chunk
    except DatabaseUnavailable:
        # A reset's snapshot: the client's Last-Event-ID still names the position before it.
        yield _error_frame("unavailable", UNAVAILABLE)
    finally:
        sink.active = False
        if sub is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await hub.unsubscribe(sub)


async def _until(stream: AsyncGenerator[bytes, None], expires_at: float) -> AsyncGenerator[bytes, None]:
    """Ends the stream, after an ``error`` event saying why, when the credential that opened it expires
    (as a websocket closes with 4401); the client reconnects with a fresh token and Last-Event-ID."""
    iterator = stream.__aiter__()
    try:
        while True:
            remaining = expires_at - time.time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), timeout=remaining)
            except StopAsyncIteration:
                return
            except TimeoutError:
                break
            yield chunk
        body = '{"type":"error","code":"token_expired","message":"the access token expired; reconnect with a new one"}'
        yield _frame("error", body)
    finally:
        await stream.aclose()


async def sse_response(request: HttpRequest, *, topic: str, user: User) -> StreamingHttpResponse:
    """The streaming response for ``GET .../events``, after checking the topic's access rule (an unknown
    or forbidden topic is NotFound alike). Resumes from the ``Last-Event-ID`` header, or from
    ``?last_event_id=`` for a client restoring a position it kept itself."""
    try:
        await topic_authorize(user=user, topic=topic)
    except TopicError:
        raise NotFound("no such event stream") from None
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    stream = event_stream(topic, last_event_id=last_event_id)
    principal = getattr(request, "principal", None)
    expires_at = getattr(principal, "expires_at", None)
    if expires_at is not None:
        stream = _until(stream, expires_at.timestamp())
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
