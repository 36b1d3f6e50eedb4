"""/ws/v1/events: subscribe to topics, resume from a seq, then stream live (docs/events.md)."""

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
from realtime.topics import TopicError, topic_authorize, topic_snapshot

logger = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008
# A client whose queue stays full this long while events from the log wait for room, or that has not
# taken its close frame this long, is cut off; so is one that has not taken a whole replay in
# REPLAY_SECONDS (meanwhile live events wait in the channel layer).
STALL_SECONDS = 10.0
REPLAY_SECONDS = 60.0
ABORT_MESSAGE = "events.abort"
_PING = json.dumps({"type": "ping"})


def ping_seconds() -> float:
    return bus.float_setting("WS_PING_SECONDS", "TORCHWIRE_WS_PING_SECONDS", 20.0)


def send_buffer() -> int:
    return max(2, bus.int_setting("WS_SEND_BUFFER", "TORCHWIRE_WS_SEND_BUFFER", 1000))


def max_topics() -> int:
    return bus.int_setting("WS_MAX_TOPICS", "TORCHWIRE_WS_MAX_TOPICS", 100)


def _encode(content: dict[str, Any]) -> str:
    return json.dumps(content, separators=(",", ":"))


class EventsConsumer(AuthenticatedConsumer):
    """Client ops: ``{"op": "subscribe", "topic", "since": seq | null, "epoch"}``,
    ``{"op": "unsubscribe", "topic"}``, ``{"op": "ping"}``.

    Everything sent goes through one bounded queue drained by a writer task, so a client that does not
    read never blocks this consumer: when the queue is full the socket is closed with 4008 and the
    client resumes with ``since``. Channels runs handlers one at a time, so live events that arrive
    while a subscription is replayed wait in the channel until the replay is queued; the lock keeps
    the ping task's position checks out of the handlers' way.
    """

    async def connect(self) -> None:
        self._cursors: dict[str, bus.Cursor] = {}
        self._outbox: asyncio.Queue[str | int] = asyncio.Queue(maxsize=send_buffer())
        self._lock = asyncio.Lock()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        await super().connect()
        self._tasks += [asyncio.create_task(self._write_loop()), asyncio.create_task(self._tick_loop())]

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Events skip Channels' per-message close_old_connections, a hop to the one sync thread for
        # every event and socket; this path touches the database only for a reset's snapshot.
        if message.get("type") == bus.EVENT_MESSAGE:
            await self.bus_event(message)
        else:
            await super().dispatch(message)

    async def release(self) -> None:
        await self._teardown()
        await super().release()

    async def _teardown(self) -> None:
        self._closing = True
        metrics.websocket_closed(self)
        for task in getattr(self, "_tasks", ()):
            task.cancel()
        for topic in list(getattr(self, "_cursors", {})):
            await self._leave(topic)

    async def _leave(self, topic: str) -> None:
        if self._cursors.pop(topic, None) is None:
            return
        try:
            await self.channel_layer.group_discard(bus.group_name(topic), self.channel_name)
        except Exception:
            # Events that still arrive for the topic are dropped: it has no cursor.
            logger.warning("leaving the group of %s failed", topic, exc_info=True)

    # Outgoing messages

    async def send_json(self, content: Any) -> None:
        await self._emit(_encode(content))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Queued behind what is already queued; the writer sends it."""
        if self._closing:
            return
        self._closing = True
        await self._queue_close(code if isinstance(code, int) and code is not True else 1000)

    async def _queue_close(self, code: int) -> None:
        try:
            self._outbox.put_nowait(code)
        except asyncio.QueueFull:
            self._drop_queued()
            self._outbox.put_nowait(code)
        for topic in list(self._cursors):
            await self._leave(topic)
        self._tasks.append(asyncio.create_task(self._abort_later()))

    def _drop_queued(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _abort_later(self) -> None:
        # If the close frame is still stuck behind data the client does not read, stop the consumer
        # anyway; the handler runs on the consumer's own task.
        await asyncio.sleep(STALL_SECONDS)
        await self.channel_layer.send(self.channel_name, {"type": ABORT_MESSAGE})

    async def events_abort(self, message: dict[str, Any]) -> None:
        logger.info("events socket of %s cut off: its close frame was not taken in %ss",
                    self.scope["user"].username, STALL_SECONDS)
        await self._teardown()
        raise StopConsumer

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
            await self._slow_consumer()
            return False

    async def _slow_consumer(self) -> None:
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
        await self._queue_close(CLOSE_SLOW_CONSUMER)

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

    async def _tick_loop(self) -> None:
        interval = ping_seconds()
        while True:
            await asyncio.sleep(interval)
            if not await self._emit(_PING):
                return
            try:
                async with self._lock:
                    if not self._cursors:
                        continue
                    now = await bus.positions(list(self._cursors))
                    for topic, position in now.items():
                        cursor = self._cursors.get(topic)
                        if cursor is not None:
                            await self._deliver(cursor, await cursor.check(position))
            except (RedisError, OSError) as exc:
                logger.warning("events position check failed: %r", exc)
            except Exception:
                logger.exception("events position check failed")

    async def _deliver(self, cursor: bus.Cursor, step: bus.Step, *, from_log: bool = True) -> None:
        """Queues a cursor's step. A live event must fit the queue now; events read from the log (a
        replay, or a catch-up after a gap) come in bursts that are not the client's doing, and may wait
        for room."""
        if isinstance(step, bus.Reset):
            await self._reset(cursor, step)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLAY_SECONDS
        if from_log and step:
            metrics.event_replayed(len(step))
        for event in step:
            patience = min(STALL_SECONDS, deadline - loop.time()) if from_log else 0.0
            if not await self._emit(event.text, patience=patience):
                return
            metrics.event_delivered(1)

    async def _reset(self, cursor: bus.Cursor, reset: bus.Reset) -> None:
        topic = cursor.topic
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

    async def bus_event(self, message: dict[str, Any]) -> None:
        cursor = self._cursors.get(message["topic"])
        if cursor is None or self._closing:
            return
        async with self._lock:
            if self._cursors.get(cursor.topic) is not cursor:
                return
            live = bus.Event.from_message(message)
            try:
                step = await cursor.feed(live)
            except (RedisError, OSError) as exc:
                # The cursor did not move: the next event or position check catches up.
                logger.warning("events catch-up on %s failed: %r", cursor.topic, exc)
                return
            await self._deliver(cursor, step, from_log=step != [live])

    async def receive_json(self, content: dict[str, Any]) -> None:
        op = content.get("op")
        if op == "subscribe":
            await self._subscribe(content)
        elif op == "unsubscribe":
            topic = content.get("topic")
            if not isinstance(topic, str):
                await self._error("bad_request", "'topic' must be a string")
                return
            async with self._lock:
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
        if topic in self._cursors:
            await self._error("already_subscribed", "unsubscribe first to subscribe again", topic)
            return
        if len(self._cursors) >= max_topics():
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
        async with self._lock:
            if self._closing:
                return
            cursor = bus.Cursor(topic)
            self._cursors[topic] = cursor
            try:
                # Join before reading the log: every event after the read then arrives live, and the
                # cursor drops the live copies of those the read already returned.
                await self.channel_layer.group_add(bus.group_name(topic), self.channel_name)
                now, step = await cursor.open(since, epoch)
            except (RedisError, OSError) as exc:
                logger.warning("events subscribe to %s failed: %r", topic, exc)
                await self._leave(topic)
                await self._error("unavailable", "the event log is unavailable; try again", topic)
                return
            await self.send_json({"type": "subscribed", "topic": topic, "last_seq": now.seq, "epoch": now.epoch})
            await self._deliver(cursor, step)
