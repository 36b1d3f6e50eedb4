"""One subscription per topic per process, fanned out in memory (docs/events.md, "The hub").

Every ASGI process has one `Hub` (per event loop). The first local subscriber of a topic makes the hub
join the topic's Channels group, which is one Redis pub/sub subscription for the process; the last one
to leave makes it leave. Live events arrive once per process on the hub's own channel (decoded once,
their wire text built once by the publisher) and are handed to each local subscriber from memory.

Two kinds of cursors (`realtime.bus.Cursor`) keep the promises of the bus:

- the hub's own cursor per topic puts the live events in seq order, reading the log once per process
  when pub/sub reorders or loses one, and checks the log's position every `WS_PING_SECONDS` for all of
  the process's topics in one round trip;
- each subscription's cursor is where its client is. In the steady state an event is the next one for
  every subscriber and passing it on costs one comparison and one `put_nowait`. A subscriber that is
  not there (still replaying, just subscribed, its queue was full, a new epoch) catches up from the log
  on a task of its own, without holding up the others.

A sink is what a subscription delivers to (a websocket, an SSE stream); see `Sink`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from app.monitoring import metrics
from realtime import bus
from realtime.bus import Cursor, Event, Position, Reset, Step

logger = logging.getLogger(__name__)

# Live events kept for a subscription while it replays or catches up; past this it reads the log instead.
PENDING_LIMIT = 1000
Opener = Callable[[Cursor], Awaitable[tuple[Position, Step]]]


def check_seconds() -> float:
    """How often the hub compares its topics with the log (the websocket ping interval)."""
    return bus.float_setting("WS_PING_SECONDS", "TORCHWIRE_WS_PING_SECONDS", 20.0)


class Sink(Protocol):
    """Where a subscription's events go.

    ``push`` takes the next live event now or not at all (False: full or closed; the subscription then
    catches up from the log, or the sink closes itself and unsubscribes). ``deliver`` takes a step read
    from the log (events, or a `Reset` needing a snapshot) and may wait for room. ``active`` is False
    once the sink will take nothing more."""

    @property
    def active(self) -> bool: ...

    def push(self, event: Event) -> bool: ...

    async def deliver(self, step: Step) -> None: ...


class Subscription:
    """One local subscriber of one topic."""

    __slots__ = ("busy", "closed", "cursor", "dirty", "pending", "sink", "task", "topic")

    def __init__(self, topic: str, sink: Sink) -> None:
        self.topic = topic
        self.sink = sink
        self.cursor = Cursor(topic)
        # While busy (opening or catching up) live events wait in `pending` rather than go to the sink.
        self.busy = True
        self.dirty = False
        self.pending: list[Event] = []
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def offer(self, event: Event, after: tuple[str | None, int]) -> bool | None:
        """Hands a live event on: True if the sink took it, False if it was not for this subscriber (a
        duplicate), None if the subscription must catch up first. ``after`` is the position the event
        follows in the hub's stream (``(None, 0)`` for the first of a topic that had none)."""
        if self.closed:
            return False
        if self.busy:
            if len(self.pending) < PENDING_LIMIT:
                self.pending.append(event)
            else:
                self.dirty = True
            return False
        cursor = self.cursor
        same = event.epoch == cursor.epoch
        if same and event.seq <= cursor.seq:
            return False
        if (same and event.seq == cursor.seq + 1) or (cursor.epoch, cursor.seq) == after:
            if self.sink.push(event):
                cursor.epoch, cursor.seq = event.epoch, event.seq
                return True
        self.dirty = True
        return None


class _Topic:
    __slots__ = ("cursor", "joined", "lock", "name", "subs")

    def __init__(self, name: str) -> None:
        self.name = name
        self.cursor = Cursor(name)
        self.subs: dict[Subscription, None] = {}  # insertion-ordered set
        self.lock = asyncio.Lock()
        self.joined = False


class Hub:
    """The process's subscriptions. Use `get_hub()`; everything runs on one event loop."""

    def __init__(self) -> None:
        self.layer: Any = get_channel_layer()
        self._topics: dict[str, _Topic] = {}
        self._channel: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._starting = asyncio.Lock()

    # For tests and metrics.
    def topics(self) -> list[str]:
        return [name for name, state in self._topics.items() if state.joined]

    def subscribers(self, topic: str) -> int:
        state = self._topics.get(topic)
        return len(state.subs) if state is not None else 0

    async def subscribe(self, topic: str, sink: Sink, opener: Opener) -> tuple[Subscription, Position, Step]:
        """Registers ``sink`` for ``topic`` and opens its cursor with ``opener`` (``Cursor.open`` or
        ``Cursor.restart``), after the process is subscribed, so no event falls between the read of the
        log and the first live one. Returns the subscription, still busy, with the position and what
        to deliver first: the caller sends those, then calls `started`. Raises ``RedisError``/``OSError``
        when Redis does not answer; nothing is left subscribed then."""
        sub = Subscription(topic, sink)
        await self._join(sub)
        try:
            position, step = await opener(sub.cursor)
        except BaseException:
            await self.unsubscribe(sub)
            raise
        return sub, position, step

    def started(self, sub: Subscription) -> None:
        """The subscription's first messages are out: from now on live events go straight to its sink."""
        self._settle(sub)

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stops delivering to ``sub`` (idempotent); the last subscriber of a topic unsubscribes the process."""
        if sub.closed:
            return
        sub.closed = True
        task = sub.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        state = self._topics.get(sub.topic)
        if state is None or state.subs.pop(sub, False) is False or state.subs:
            return
        async with state.lock:
            if state.subs or not state.joined:
                return
            try:
                await self.layer.group_discard(bus.group_name(state.name), self._channel)
            except (RedisError, OSError) as exc:
                # The layer has forgotten the group already; Redis drops the subscription when the
                # connection does, and a stray event for it is dropped on arrival.
                logger.warning("leaving the group of %s failed: %r", state.name, exc)
            except Exception:
                logger.warning("leaving the group of %s failed", state.name, exc_info=True)
            finally:
                state.joined = False
                if not state.subs and self._topics.get(state.name) is state:
                    del self._topics[state.name]
        if not self._topics:
            self._wake.set()  # the hub's task ends when the process has no topics

    async def _join(self, sub: Subscription) -> _Topic:
        while True:
            state = self._topics.get(sub.topic)
            if state is None:
                state = self._topics[sub.topic] = _Topic(sub.topic)
            async with state.lock:
                if self._topics.get(sub.topic) is not state:
                    continue  # emptied and dropped while this waited
                state.subs[sub] = None
                if state.joined:
                    return state
                try:
                    await self._ensure_task()
                    assert self._channel is not None
                    await self.layer.group_add(bus.group_name(state.name), self._channel)
                    # Its position read after joining: every later event arrives live.
                    await state.cursor.open(None)
                except BaseException:
                    state.subs.pop(sub, None)
                    if not state.subs:
                        del self._topics[state.name]
                        try:
                            await self.layer.group_discard(bus.group_name(state.name), self._channel)
                        except Exception:
                            logger.debug("leaving %s after a failed join failed too", state.name, exc_info=True)
                    raise
                state.joined = True
                return state

    async def _ensure_task(self) -> None:
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            self._channel = await self.layer.new_channel(prefix="hub.")
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._channel), name="events-hub")

    # The hub's task: live events and position checks, one at a time, so it alone drives topic cursors.

    async def _run(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        receiving: asyncio.Future[dict[str, Any]] | None = None
        waking: asyncio.Future[Any] | None = None
        deadline = loop.time() + check_seconds()
        try:
            while self._topics:
                if receiving is None:
                    receiving = asyncio.ensure_future(self.layer.receive(channel))
                if waking is None:
                    waking = asyncio.ensure_future(self._wake.wait())
                deadline = min(deadline, loop.time() + check_seconds())  # a shorter setting applies at once
                done, _ = await asyncio.wait({receiving, waking}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if waking in done:
                    waking = None
                    self._wake.clear()
                    continue
                if receiving in done:
                    future, receiving = receiving, None
                    try:
                        message = future.result()
                    except Exception:
                        logger.warning("events hub receive failed", exc_info=True)
                        await asyncio.sleep(1)
                        continue
                    if message.get("type") == bus.EVENT_MESSAGE:
                        await self._live(Event.from_message(message))
                else:
                    await self._check()
                    deadline = loop.time() + check_seconds()
        finally:
            for future in (receiving, waking):
                if future is not None:
                    # Cancelling the layer's receive also drops the channel and its subscription.
                    future.cancel()
            self._task = None

    async def _live(self, event: Event) -> None:
        state = self._topics.get(event.topic)
        if state is None or not state.joined:
            return
        before = (state.cursor.epoch, state.cursor.seq)
        try:
            step = await state.cursor.feed(event)
        except (RedisError, OSError) as exc:
            # The hub's cursor did not move: the next event or check catches up.
            logger.warning("events hub catch-up on %s failed: %r", event.topic, exc)
            return
        self._dispatch(state, step, before)

    async def _check(self) -> None:
        states = [state for state in self._topics.values() if state.joined]
        if not states:
            return
        try:
            now = await bus.positions([state.name for state in states])
            for state in states:
                if state.joined:
                    before = (state.cursor.epoch, state.cursor.seq)
                    self._dispatch(state, await state.cursor.check(now[state.name]), before)
        except (RedisError, OSError) as exc:
            logger.warning("events hub position check failed: %r", exc)
        for state in states:
            for sub in list(state.subs):
                if not sub.busy and not sub.closed and self._behind(sub):
                    sub.dirty = True
                    self._catch_up_later(sub)

    def _dispatch(self, state: _Topic, step: Step, after: tuple[str | None, int]) -> None:
        subs = list(state.subs)
        if isinstance(step, Reset):
            # A new epoch the log cannot bridge: each subscriber gets its reset (and snapshot) from its
            # own catch-up, which reads where it stands.
            for sub in subs:
                sub.dirty = True
                if not sub.busy:
                    self._catch_up_later(sub)
            return
        for event in step:
            delivered = 0
            for sub in subs:
                taken = sub.offer(event, after)
                if taken:
                    delivered += 1
                elif taken is None:
                    self._catch_up_later(sub)
            metrics.event_delivered(delivered)
            after = (event.epoch, event.seq)

    def _behind(self, sub: Subscription) -> bool:
        state = self._topics.get(sub.topic)
        if state is None:
            return False
        here, there = sub.cursor, state.cursor
        return here.epoch != there.epoch or here.seq < there.seq

    def _settle(self, sub: Subscription) -> None:
        """Ends a subscription's busy spell, or starts a catch-up if it has live events waiting or is
        behind the hub."""
        if sub.closed:
            return
        if sub.pending or sub.dirty or self._behind(sub):
            self._catch_up_later(sub)
        else:
            sub.busy = False

    def _catch_up_later(self, sub: Subscription) -> None:
        if sub.closed or (sub.task is not None and not sub.task.done()):
            return
        sub.busy = True
        sub.task = asyncio.create_task(self._catch_up(sub))

    async def _catch_up(self, sub: Subscription) -> None:
        try:
            while not sub.closed and sub.sink.active:
                pending, sub.pending = sub.pending, []
                dirty, sub.dirty = sub.dirty, False
                for event in pending:
                    step = await sub.cursor.feed(event)
                    if step:
                        await sub.sink.deliver(step)
                if dirty or self._behind(sub):
                    step = await sub.cursor.catch_up()
                    if step:
                        await sub.sink.deliver(step)
                if not sub.pending and not sub.dirty:
                    break
        except (RedisError, OSError) as exc:
            # The cursor did not move: the hub's next check starts another catch-up.
            logger.warning("events catch-up on %s failed: %r", sub.topic, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("events catch-up on %s failed", sub.topic)
        finally:
            sub.task = None
            sub.busy = False


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The running event loop's hub."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
