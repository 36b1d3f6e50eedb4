"""The outbox relay: hands pending events (services.publish_on_commit) to the bus.

- **Kick.** After a commit that wrote events, the writing process relays the pending events of those
  topics at once, so while Redis answers an event reaches subscribers as fast as a direct publish.
- **Loop.** Every ASGI process (lifespan) relays whatever is still pending every EVENT_RELAY_SECONDS:
  events whose kick failed because Redis was down, or whose process died between commit and kick.
- **Backoff.** After Redis fails, kicks and the loop of that process wait EVENT_RELAY_SECONDS, doubling
  up to BACKOFF_CAP_SECONDS, before they try again; the first success resets it.

Relays take no lock: each goes oldest first and stops at the first failure, so a topic's events keep
their order whoever relays them, and the bus logs a row's key once, so a row two relays pass over (or
one relay retries after losing the reply) still gets a single seq.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from app.core.db import db_async, is_unavailable, outage
from realtime import bus

from .models import OutboxEvent

logger = logging.getLogger(__name__)

# Rows one pass takes: at most a fifth of the bus's dedupe window, so a row a relay retries (its
# append took effect but it never recorded that) is still remembered by the bus.
RELAY_BATCH = 200
BACKOFF_CAP_SECONDS = 10.0


def outbox_relay(*, topics: Collection[str] | None = None, limit: int = RELAY_BATCH) -> int:
    """Publishes up to ``limit`` pending events (of ``topics``, or of every topic), oldest first, and
    marks them published with their seq and epoch; returns how many rows it took care of (fewer than
    ``limit``: nothing else was pending when it looked).

    Stops at the first event Redis does not take and raises that ``RedisError``/``OSError`` after
    marking the ones before it, so a later event of a topic never overtakes an earlier one. A row the
    bus refuses as malformed is marked published without a seq and logged. Sync code only.
    """
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    if topics is not None:
        pending = pending.filter(topic__in=list(topics))
    rows = list(pending.order_by("id")[:limit])
    events: list[bus.Event] = []
    handled: list[OutboxEvent] = []
    failure: Exception | None = None
    for row in rows:
        try:
            event = bus.append_sync(row.topic, row.type, row.data, key=row.key.hex)
        except (RedisError, OSError) as exc:
            failure = exc
            break
        except (ValueError, TypeError):
            logger.exception("dropping outbox event %s (%s on %s): the bus refuses it", row.pk, row.type, row.topic)
            row.seq, row.epoch = None, ""
        else:
            events.append(event)
            row.seq, row.epoch = event.seq, event.epoch
        row.published_at = timezone.now()
        handled.append(row)
    bus.fan_out_sync(events)
    if handled:
        OutboxEvent.objects.bulk_update(handled, ["published_at", "seq", "epoch"])
    if failure is not None:
        raise failure
    return len(handled)


class Backoff:
    """When a process may next try Redis, shared by its kicks (any thread) and its loop."""

    def __init__(self, base: float, cap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.base, self.cap, self.clock = base, max(cap, base), clock
        self.failures = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Seconds until the next try is due (0: now)."""
        with self._lock:
            return max(0.0, self._next - self.clock())

    def failed(self) -> float:
        """Records a failure; returns the wait before the next try."""
        with self._lock:
            self.failures += 1
            delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
            self._next = self.clock() + delay
            return delay

    def succeeded(self) -> int:
        """Records a success; returns how many failures in a row it ends."""
        with self._lock:
            failures, self.failures, self._next = self.failures, 0, 0.0
            return failures


_backoff: Backoff | None = None


def backoff() -> Backoff:
    global _backoff
    if _backoff is None:
        _backoff = Backoff(settings.EVENT_RELAY_SECONDS, BACKOFF_CAP_SECONDS)
    return _backoff


def relay_pending(*, topics: Collection[str] | None = None, drain: bool = True) -> int:
    """Relays the pending events of ``topics`` (or of all), unless Redis failed lately: until none is
    left (``drain``), or one pass of at most RELAY_BATCH (the rest stays for the loop). Returns how
    many events went. A failure is logged and starts or extends the backoff, never raised."""
    state = backoff()
    if state.remaining() > 0:
        return 0
    total = 0
    try:
        while True:
            done = outbox_relay(topics=topics)
            total += done
            if done < RELAY_BATCH or not drain:
                break
    except (RedisError, OSError) as exc:
        delay = state.failed()
        logger.warning("events relay: Redis did not take an event (%r); pending events stay in the outbox, "
                       "next try in %.1fs", exc, delay)
        return total
    except DatabaseError as exc:
        delay = state.failed()
        logger.warning("events relay: the database did not answer (%r); next try in %.1fs", exc, delay)
        return total
    if state.succeeded():
        logger.info("events relay: Redis answers again; %d pending events published", total)
    return total


def kick(topics: Collection[str]) -> None:
    """Relays ``topics`` now, one pass at most (so a backlog never holds up the committing request):
    the ``on_commit`` callback of `publish_on_commit`. Never raises."""
    try:
        relay_pending(topics=topics, drain=False)
    except Exception:
        logger.exception("events relay of %s failed; the relay loop retries", ", ".join(topics))


async def _relay_loop() -> None:
    interval = settings.EVENT_RELAY_SECONDS
    run = db_async(relay_pending)
    while True:
        await asyncio.sleep(max(interval, backoff().remaining()))
        if outage.down:  # the outage is logged once by app.core.db; rows wait in the outbox meanwhile
            continue
        try:
            await run()
        except Exception as exc:
            if is_unavailable(exc):
                continue
            logger.exception("events relay loop: a pass failed; retrying")


_loop_task: asyncio.Task[None] | None = None


async def relay_loop_start() -> None:
    """Lifespan start (asgi.py): the relay loop of this process, on the server's event loop."""
    global _loop_task
    _loop_task = asyncio.create_task(_relay_loop(), name="events-relay")


async def relay_loop_stop() -> None:
    global _loop_task
    if _loop_task is not None:
        _loop_task.cancel()
        try:
            await _loop_task
        except asyncio.CancelledError:
            pass
        _loop_task = None
