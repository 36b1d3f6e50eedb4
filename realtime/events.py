"""/ws/v1/events: subscribe to topics, resume from a seq, then stream live (docs/events.md).

Live events come from the process's hub (`realtime.hub`), which holds one Redis subscription per topic
and hands each event's wire text to every local socket from memory."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import aclose_old_connections
from channels.exceptions import StopConsumer
from redis.exceptions import RedisError

from app.core.errors import Unavailable
from app.monitoring import metrics
from realtime import bus
from realtime.consumers import AuthenticatedConsumer
from realtime.hub import Subscription, get_hub
from realtime.topics import TopicError, topic_authorize, topic_snapshot

logger = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008
# A client whose queue stays full this long while events from the log wait for room, or that has not
# taken its close frame this long, is cut off; so is one that has not taken a whole replay in
# REPLAY_SECONDS (meanwhile live events wait in the hub, or are read from the log later).
STALL_SECONDS = 10.0
REPLAY_SECONDS = 60.0
_PING = json.dumps({"type": "ping"})


def ping_seconds() -> float:
    return bus.float_setting("WS_PING_SECONDS", "TORCHWIRE_WS_PING_SECONDS", 20.0)


def send_buffer() -> int:
    return max(2, bus.int_setting("WS_SEND_BUFFER", "TORCHWIRE_WS_SEND_BUFFER", 1000))


def max_topics() -> int:
    return bus.int_setting("WS_MAX_TOPICS", "TORCHWIRE_WS_MAX_TOPICS", 100)


def _encode(content: dict[str, Any]) -> str:
    return json.dumps(content, separators=(",", ":"))


class _TopicSink:
    """One socket's end of one subscription (`realtime.hub.Sink`)."""

    __slots__ = ("consumer", "open", "topic")

    def __init__(self, consumer: EventsConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.open = True

    @property
    def active(self) -> bool:
        return self.open and not self.consumer._closing

    def push(self, event: bus.Event) -> bool:
        return self.open and self.consumer._push(event.text)

    async def deliver(self, step: bus.Step) -> None:
        if self.open:
            await self.consumer._deliver(self.topic, step)


class EventsConsumer(AuthenticatedConsumer):
    """Client ops: ``{"op": "subscribe", "topic", "since": seq | null, "epoch"}``,
    ``{"op": "unsubscribe", "topic"}``, ``{"op": "ping"}``.

    Everything sent goes through one bounded queue drained by a writer task, so a client that does not
    read never blocks the hub or this consumer: when a live event finds the queue full the socket is
    closed with 4008 and the client resumes with ``since``. The consumer has no channel of its own
    (nothing reaches it through the Channels layer), so it costs no Redis subscription.
    """

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Channels' AsyncConsumer.__call__ without the channel layer, plus a way to stop a consumer whose
        # client takes nothing (not even its close frame) from another task.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self._aborted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        receiving: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                receiving = asyncio.ensure_future(receive())
                await asyncio.wait({receiving, self._aborted}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    logger.info("events socket of %s cut off: its close frame was not taken in %ss",
                                self.scope["user"].username, STALL_SECONDS)
                    return
                message, receiving = receiving.result(), None
                await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            if receiving is not None:
                receiving.cancel()

    async def connect(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._outbox: asyncio.Queue[str | int] = asyncio.Queue(maxsize=send_buffer())
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        await super().connect()
        self._tasks += [asyncio.create_task(self._write_loop()), asyncio.create_task(self._ping_loop())]

    async def release(self) -> None:
        await self._teardown()
        await super().release()

    async def _teardown(self) -> None:
        self._closing = True
        metrics.websocket_closed(self)
        for task in getattr(self, "_tasks", ()):
            if task is not asyncio.current_task():
                task.cancel()
        for topic in list(getattr(self, "_subs", {})):
            await self._leave(topic)

    async def _leave(self, topic: str) -> None:
        sub = self._subs.pop(topic, None)
        if sub is None:
            return
        sink = sub.sink
        assert isinstance(sink, _TopicSink)
        sink.open = False
        await get_hub().unsubscribe(sub)

    # Outgoing messages

    async def send_json(self, content: Any) -> None:
        await self._emit(_encode(content))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Queued behind what is already queued; the writer sends it."""
        if self._closing:
            return
        self._closing = True
        self._queue_close(code if isinstance(code, int) and code is not True else 1000)

    def _queue_close(self, code: int) -> None:
        try:
            self._outbox.put_nowait(code)
        except asyncio.QueueFull:
            self._drop_queued()
            self._outbox.put_nowait(code)
        self._tasks.append(asyncio.create_task(self._after_close()))

    def _drop_queued(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _after_close(self) -> None:
        for topic in list(self._subs):
            await self._leave(topic)
        # If the close frame is still stuck behind data the client does not read, stop the consumer
        # anyway (serve's loop ends; release then tears down).
        await asyncio.sleep(STALL_SECONDS)
        if not self._aborted.done():
            self._aborted.set_result(None)

    def _push(self, text: str) -> bool:
        """A live event from the hub: queued now, or the socket is closed with 4008."""
        if self._closing:
            return False
        try:
            self._outbox.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self._slow_consumer()
            return False

    async def _emit(self, text: str, *, patience: float = 0.0) -> bool:
        """Queues ``text``, or closes the socket with 4008 if the queue stays full for ``patience``
        seconds (0: if it is full now)."""
        if self._closing:
            return False
        try:
            if patience > 0:
                await asyncio.wait_for(self._outbox.put(text), patience)
            else:
                self._outbox.put_nowait(text)
            return True
        except (asyncio.QueueFull, TimeoutError):
            self._slow_consumer()
            return False

    def _slow_consumer(self) -> None:
        if self._closing:
            return
        self._closing = True
        logger.info("events socket of %s is not keeping up; closing with %d",
                    self.scope["user"].username, CLOSE_SLOW_CONSUMER)
        # What is still queued is dropped: the client resumes from the last seq it got.
        metrics.event_dropped(self._outbox.qsize())
        metrics.slow_consumer_closed()
        self._drop_queued()
        self._outbox.put_nowait(_encode({
            "type": "error", "code": "slow_consumer",
            "message": f"more than {self._outbox.maxsize} messages waiting; reconnect and resume with since",
        }))
        self._queue_close(CLOSE_SLOW_CONSUMER)

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, int):
                    await super().close(code=item)
                    return
                await self.send(text_data=item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away (uvicorn raises ClientDisconnected, an OSError)
            logger.debug("events writer stopped: %r", exc)

    async def _ping_loop(self) -> None:
        # Position checks are the hub's, once per process for all its topics.
        interval = ping_seconds()
        while True:
            await asyncio.sleep(interval)
            if not await self._emit(_PING):
                return

    async def _deliver(self, topic: str, step: bus.Step) -> None:
        """Queues a step read from the log (a replay, or a catch-up after a gap): bursts that are not
        the client's doing, so they may wait for room."""
        if isinstance(step, bus.Reset):
            await self._reset(topic, step)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLAY_SECONDS
        metrics.event_replayed(len(step))
        for event in step:
            if not await self._emit(event.text, patience=min(STALL_SECONDS, deadline - loop.time())):
                return
            metrics.event_delivered(1)

    async def _reset(self, topic: str, reset: bus.Reset) -> None:
        try:
            snapshot = await topic_snapshot(topic=topic)
        except Exception as exc:
            if not isinstance(exc, Unavailable):  # the database unreachable is logged once, elsewhere
                logger.exception("snapshot of %s failed", topic)
            await self._leave(topic)
            await self._error("unavailable", "could not build the topic's snapshot; subscribe again", topic)
            return
        finally:
            await aclose_old_connections()
        await self._emit(_encode({"type": "reset", "topic": topic, "last_seq": reset.position.seq,
                                  "epoch": reset.position.epoch, "snapshot": snapshot}), patience=STALL_SECONDS)

    async def _error(self, code: str, message: str, topic: str | None = None) -> None:
        content: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if topic is not None:
            content["topic"] = topic
        await self._emit(_encode(content))

    # Incoming

    async def receive_json(self, content: dict[str, Any]) -> None:
        op = content.get("op")
        if op == "subscribe":
            await self._subscribe(content)
        elif op == "unsubscribe":
            topic = content.get("topic")
            if not isinstance(topic, str):
                await self._error("bad_request", "'topic' must be a string")
                return
            await self._leave(topic)
            await self.send_json({"type": "unsubscribed", "topic": topic})
        elif op == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self._error("bad_request", "'op' must be one of subscribe, unsubscribe, ping")

    async def _subscribe(self, content: dict[str, Any]) -> None:
        topic, since, epoch = content.get("topic"), content.get("since"), content.get("epoch")
        if not isinstance(topic, str):
            await self._error("bad_request", "'topic' must be a string")
            return
        if since is not None and (type(since) is not int or not 0 <= since < 2**63):
            await self._error("bad_request", "'since' must be null or a seq (an integer >= 0)", topic)
            return
        if epoch is not None and not (isinstance(epoch, str) and len(epoch) <= 64):
            await self._error("bad_request", "'epoch' must be null or the epoch string events carry", topic)
            return
        if topic in self._subs:
            await self._error("already_subscribed", "unsubscribe first to subscribe again", topic)
            return
        if len(self._subs) >= max_topics():
            await self._error("too_many_topics", f"at most {max_topics()} topics per socket", topic)
            return
        try:
            await topic_authorize(user=self.scope["user"], topic=topic)
        except TopicError as exc:
            await self._error(exc.code, exc.message, topic)
            return
        except Exception as exc:
            if not isinstance(exc, Unavailable):
                logger.exception("authorizing %s failed", topic)
            await self._error("unavailable", "could not check access to the topic; try again", topic)
            return
        if self._closing:
            return
        hub = get_hub()
        try:
            # The hub subscribes the process before the cursor reads the log: every event after the
            # read then arrives live, and the cursor drops the live copies of those the read returned.
            sub, now, step = await hub.subscribe(topic, _TopicSink(self, topic),
                                                 lambda cursor: cursor.open(since, epoch))
        except (RedisError, OSError) as exc:
            logger.warning("events subscribe to %s failed: %r", topic, exc)
            await self._error("unavailable", "the event log is unavailable; try again", topic)
            return
        if self._closing:
            await hub.unsubscribe(sub)
            return
        self._subs[topic] = sub
        await self.send_json({"type": "subscribed", "topic": topic, "last_seq": now.seq, "epoch": now.epoch})
        await self._deliver(topic, step)
        hub.started(sub)
