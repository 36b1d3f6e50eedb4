"""The event bus: the one way job and model events reach websocket and SSE clients (docs/events.md).

Each topic has a Redis counter (``seq``), a bounded Redis Stream of its recent events (the replay log)
and an ``epoch``, a random id chosen whenever the counter is (re)created; one Lua script advances the
counter and appends to the log, so seq order is log order. The event is then fanned out to every ASGI
process through the Channels layer (Redis pub/sub), to the group ``group_name(topic)``. Pub/sub may
reorder events of concurrent publishers or drop some while a connection is down; `Cursor` repairs both
from the log, so subscribers see each seq once, in order.

Application code does not call this module to publish: ``app.events.services.publish_on_commit`` writes
the event with its transaction and relays it here after the commit, retrying while Redis is down (a
keyed append, logged once however often it is retried). Whoever calls `publish` directly must do so only
after the change has committed: a client must never hear of a row that then rolls back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.core.redis import get_redis

logger = logging.getLogger(__name__)

class BusObserver:
    """Statistics hooks, as `inference.batcher.BatchObserver`: the bus imports no metrics code. Called on
    whatever thread or loop published; must be quick and must not raise."""

    def published(self, topic: str) -> None:
        """After an event is appended to ``topic``'s log (once per event, however often it is retried)."""


_observer = BusObserver()


def set_observer(observer: BusObserver) -> None:
    """Installs the process's observer (app.monitoring does, when Django's apps are ready)."""
    global _observer
    _observer = observer


EVENT_MESSAGE = "bus.event"
# Control messages share the `type` field with events; an event may not take one of their names.
RESERVED_TYPES = frozenset({"subscribed", "unsubscribed", "reset", "error", "ping", "pong"})
# Both are matched against the whole string (`fullmatch`): `$` would also match before a trailing newline,
# so "model:x\n" would read as "model:x" when authorized while naming another topic.
TOPIC_RE = re.compile(r"(?P<prefix>[a-z][a-z0-9_]{0,31}):(?P<key>[^\s{}\x00-\x1f\x7f]{1,200})")
TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")


def int_setting(name: str, *_legacy: object) -> int:
    """The Django setting ``name`` (defaults and the environment: app/config.py). Extra arguments, the
    variable and default older callers still pass, are ignored."""
    return int(getattr(settings, name))


def float_setting(name: str, *_legacy: object) -> float:
    return float(getattr(settings, name))


def log_maxlen() -> int:
    return int(settings.EVENT_LOG_MAXLEN)


def log_ttl_seconds() -> int:
    """An idle topic's keys expire this long after its last event (the next one starts a new epoch)."""
    return int(settings.EVENT_LOG_RETENTION_DAYS) * 86_400


# The shared client's pool raises, rather than waits, past 100 connections; a burst of subscribes (a
# deploy reconnecting every socket) must queue here instead of failing.
REDIS_CONCURRENCY = 32
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def _redis_slot() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(REDIS_CONCURRENCY)
    async with slot:
        yield


def parse_topic(topic: object) -> tuple[str, str]:
    """``(prefix, key)`` of a well-formed topic such as ``job:42``; ValueError otherwise."""
    match = TOPIC_RE.fullmatch(topic) if isinstance(topic, str) else None
    if match is None:
        raise ValueError(f"{topic!r} is not a topic: expected '<prefix>:<key>', at most 200 characters after ':'")
    return match["prefix"], match["key"]


def group_name(topic: str) -> str:
    """The Channels group of a topic: readable, valid (``[a-zA-Z0-9_.-]``, under 100 characters) and,
    through the digest, distinct for distinct topics."""
    digest = hashlib.sha256(topic.encode()).hexdigest()[:20]
    readable = re.sub(r"[^a-zA-Z0-9_.-]", "_", topic)[:60]
    return f"tw.ev.{readable}.{digest}"


def _keys(topic: str) -> list[str]:
    # The braces are a hash tag: all keys of a topic share a Redis Cluster slot, as the script needs.
    tag = "{" + topic + "}"
    return [f"tw:events:seq:{tag}", f"tw:events:epoch:{tag}", f"tw:events:log:{tag}"]


def _keys_with_ids(topic: str) -> list[str]:
    return [*_keys(topic), "tw:events:ids:{" + topic + "}"]


# How many recent publisher keys a topic remembers (see `append_sync`): a publisher that retries an
# event it may already have published must do so before this many newer events of the topic.
DEDUPE_WINDOW = 1000


# KEYS: seq, epoch, log, ids. ARGV: type, data JSON, maxlen, ttl ms, a fresh epoch in case one is
# needed, the publisher's key for the event ('' for none), the dedupe window.
# A missing counter or epoch means the topic is new, expired or lost with Redis's data: start a new
# epoch with an empty log, so no client can mistake its numbers for the old ones. A key already in
# `ids` (a sorted set: member key, score seq) is an event published before: answer its seq again.
_PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[2])
if (not epoch) or redis.call('EXISTS', KEYS[1]) == 0 then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('SET', KEYS[1], 0)
  redis.call('SET', KEYS[2], epoch)
elseif ARGV[6] ~= '' then
  local seen = redis.call('ZSCORE', KEYS[4], ARGV[6])
  if seen then
    local id = string.format('%d-0', tonumber(seen))
    local entry = redis.call('XRANGE', KEYS[3], id, id)
    local ts = 0
    if entry[1] then
      local fields = entry[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'ts' then ts = tonumber(fields[i + 1]) end
      end
    end
    return {tonumber(seen), ts, epoch, 1}
  end
end
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('%d-0', seq),
           't', ARGV[1], 'ts', string.format('%d', ts), 'd', ARGV[2])
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[4], seq, ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1 - tonumber(ARGV[7]))
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return {seq, ts, epoch, 0}
"""


@dataclass(frozen=True)
class Event:
    """One published event. ``text`` is its wire form, sent to clients as is:
    ``{"type", "topic", "seq", "epoch", "ts", "data"}``."""

    topic: str
    type: str
    seq: int
    epoch: str
    ts: float
    text: str

    @classmethod
    def build(cls, *, topic: str, type: str, seq: int, epoch: str, ts_ms: int, data_json: str) -> Event:
        ts = ts_ms / 1000
        text = (
            f'{{"type":{json.dumps(type)},"topic":{json.dumps(topic)},"seq":{seq},'
            f'"epoch":{json.dumps(epoch)},"ts":{json.dumps(ts)},"data":{data_json}}}'
        )
        return cls(topic=topic, type=type, seq=seq, epoch=epoch, ts=ts, text=text)

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.text)["data"]
        return data

    def as_dict(self) -> dict[str, Any]:
        content: dict[str, Any] = json.loads(self.text)
        return content

    def message(self) -> dict[str, Any]:
        """The Channels layer message that carries the event to consumers (handled as ``bus_event``)."""
        return {"type": EVENT_MESSAGE, "topic": self.topic, "event_type": self.type, "seq": self.seq,
                "epoch": self.epoch, "ts": self.ts, "text": self.text}

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Event:
        return cls(topic=message["topic"], type=message["event_type"], seq=int(message["seq"]),
                   epoch=message["epoch"], ts=float(message["ts"]), text=message["text"])


@dataclass(frozen=True)
class Position:
    """Where a topic's log ends. ``epoch`` is None, and ``seq`` 0, while the topic has no events (never
    published, or expired)."""

    epoch: str | None
    seq: int


@dataclass(frozen=True)
class Backlog:
    """The events after a client's position, or None when the log cannot give them (see `backlog`)."""

    position: Position
    events: list[Event] | None


def check_event_type(type: object) -> str:
    """``type`` if it may name an event; ValueError otherwise."""
    if not isinstance(type, str) or TYPE_RE.fullmatch(type) is None or type in RESERVED_TYPES:
        raise ValueError(
            f"event type {type!r}: letters, digits and _.:- (at most 100), not one of {sorted(RESERVED_TYPES)}"
        )
    return type


def _check_names(topic: str, type: str) -> None:
    parse_topic(topic)
    check_event_type(type)


def encode_event(topic: str, type: str, data: Mapping[str, Any]) -> str:
    """Checks an event and returns its ``data`` as the JSON text it is published with; ValueError or
    TypeError for a malformed topic, a reserved or malformed type, or data that is not a JSON object."""
    _check_names(topic, type)
    if not isinstance(data, Mapping):
        raise TypeError(f"event data must be a dict, not {data.__class__.__name__}")
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def _script_args(topic: str, type: str, data_json: str, key: str | None) -> tuple[list[str], list[str | int]]:
    _check_names(topic, type)
    if not (isinstance(data_json, str) and data_json.startswith("{")):
        raise ValueError("event data must be the JSON text of an object (see encode_event)")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 100):
        raise ValueError("an event key is a non-empty string of at most 100 characters")
    args: list[str | int] = [type, data_json, log_maxlen(), log_ttl_seconds() * 1000, secrets.token_hex(8),
                             key or "", DEDUPE_WINDOW]
    return _keys_with_ids(topic), args


def _published(topic: str, type: str, data_json: str, reply: list[Any]) -> Event:
    seq, ts_ms, epoch, seen = reply
    epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
    if not int(seen):
        _observer.published(topic)
    return Event.build(topic=topic, type=type, seq=int(seq), epoch=epoch, ts_ms=int(ts_ms), data_json=data_json)


async def publish(topic: str, type: str, data: Mapping[str, Any], *, key: str | None = None) -> Event:
    """Appends an event to the topic's log and fans it out; returns it with its seq.

    For coroutines on the event loop (sync code uses `publish_sync`). Call only after the change the
    event reports has committed. Once the log holds the event it counts as published: a failed fan-out
    is logged, not raised, and subscribers recover the event from the log. ``key``: see `append_sync`.
    """
    data_json = encode_event(topic, type, data)
    keys, args = _script_args(topic, type, data_json, key)
    async with _redis_slot():
        reply = await get_redis().register_script(_PUBLISH_LUA)(keys=keys, args=args)
    event = _published(topic, type, data_json, reply)
    await fan_out([event])
    return event


async def fan_out(events: Sequence[Event]) -> None:
    """Sends logged events to every ASGI process (the Channels layer). Never raises: an event the
    fan-out misses is in the log, where subscribers' cursors find it."""
    layer = get_channel_layer()
    if layer is None:
        return
    for event in events:
        try:
            await layer.group_send(group_name(event.topic), event.message())
        except Exception:
            logger.warning("fan-out of %s seq %d failed; subscribers will recover it from the log",
                           event.topic, event.seq, exc_info=True)
            return


_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def _sync_redis(caller: str) -> redis.Redis:
    global _sync_client
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(f"{caller} called on an event loop; await publish() instead")
    with _sync_lock:
        if _sync_client is None:
            # One immediate retry (a pooled connection Redis dropped on restart), not redis-py's default
            # ten with backoff, seconds during which an outage would stall the committing thread: the
            # outbox's relay is the retry.
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5,
                                                retry=Retry(NoBackoff(), 1))
        return _sync_client


def append_sync(topic: str, type: str, data_json: str, *, key: str | None = None) -> Event:
    """Appends one event, its data already encoded by `encode_event`, to the topic's log; no fan-out.
    Raises ``redis.RedisError`` when Redis does not answer; the event may then have been appended or
    not (a reply lost after the script ran), which only a retry with the same ``key`` settles.

    ``key`` names the event for its publisher: an event whose key the topic has seen among its last
    `DEDUPE_WINDOW` keys is not appended again, and the seq it got the first time comes back. A
    publisher that cannot know whether an append took effect (the reply was lost, or it crashed before
    recording it) retries with the same key and never logs the event twice.
    """
    keys, args = _script_args(topic, type, data_json, key)
    reply = _sync_redis("append_sync").register_script(_PUBLISH_LUA)(keys=keys, args=args)
    return _published(topic, type, data_json, reply)


def fan_out_sync(events: Sequence[Event]) -> None:
    """`fan_out` for sync code: one ``async_to_sync`` for all of ``events``, which inside a
    ``sync_to_async`` thread runs on the server's loop and elsewhere (a Celery worker) on a short-lived
    loop of its own, costing a Redis connection."""
    if events:
        try:
            async_to_sync(fan_out)(events)
        except Exception:
            logger.warning("fan-out of %d events failed; subscribers will recover them from the log", len(events),
                           exc_info=True)


def publish_sync(topic: str, type: str, data: Mapping[str, Any], *, key: str | None = None) -> Event:
    """`publish` for sync code. Never call it from a coroutine (it raises rather than block the loop).

    Application code publishes through ``app.events.services.publish_on_commit``, which keeps the event in the
    database until Redis has it; this is the bus primitive under it.
    """
    event = append_sync(topic, type, encode_event(topic, type, data), key=key)
    fan_out_sync([event])
    return event


def _position(epoch: bytes | None, seq: bytes | None) -> Position:
    if epoch is None or seq is None:
        return Position(epoch=None, seq=0)
    return Position(epoch=epoch.decode(), seq=int(seq))


async def position(topic: str) -> Position:
    return (await positions([topic]))[topic]


async def positions(topics: Iterable[str]) -> dict[str, Position]:
    """The positions of several topics in one round trip."""
    names = list(topics)
    async with _redis_slot(), get_redis().pipeline(transaction=False) as pipe:
        for topic in names:
            seq_key, epoch_key, _ = _keys(topic)
            pipe.get(epoch_key)
            pipe.get(seq_key)
        values = await pipe.execute()
    return {topic: _position(values[2 * i], values[2 * i + 1]) for i, topic in enumerate(names)}


async def backlog(topic: str, since: int, *, epoch: str | None = None) -> Backlog:
    """The current position and the events with seq > ``since``, read atomically.

    ``events`` is None when the log cannot give exactly those: ``epoch`` is given and is not the
    current one, ``since`` is beyond the end, or seq ``since + 1`` has been trimmed or lost. Without
    ``epoch`` only the bounds are checked, which cannot tell a restarted topic from the old one.
    """
    seq_key, epoch_key, log_key = _keys(topic)
    async with _redis_slot(), get_redis().pipeline(transaction=True) as pipe:
        pipe.get(epoch_key)
        pipe.get(seq_key)
        pipe.xrange(log_key, min=f"{min(max(since, 0), 2**62) + 1}-0", max="+")
        raw_epoch, raw_seq, entries = await pipe.execute()
    current = _position(raw_epoch, raw_seq)
    if since < 0 or since > current.seq or (epoch is not None and epoch != current.epoch):
        return Backlog(current, None)
    if since == current.seq:
        return Backlog(current, [])
    assert current.epoch is not None
    events = [_entry_event(topic, current.epoch, entry_id, fields) for entry_id, fields in entries]
    if not events or events[0].seq != since + 1 or events[-1].seq != current.seq:
        return Backlog(current, None)
    return Backlog(current, events)


def _entry_event(topic: str, epoch: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event.build(topic=topic, type=fields[b"t"].decode(), seq=int(entry_id.split(b"-", 1)[0]), epoch=epoch,
                       ts_ms=int(fields[b"ts"]), data_json=fields[b"d"].decode())


async def replay(topic: str, since: int, *, epoch: str | None = None) -> list[Event] | None:
    """The events with seq > ``since`` still in the log, or None if it no longer holds seq ``since + 1``
    (trimmed, expired, lost with Redis's data, or ``epoch`` is not the current one)."""
    return (await backlog(topic, since, epoch=epoch)).events


@dataclass(frozen=True)
class Reset:
    """The subscriber cannot be given what it missed: it needs a snapshot, then continues after ``position``."""

    position: Position


Step = list[Event] | Reset


class Cursor:
    """One subscriber's place on one topic: merges the replay log and the live fan-out into one stream in
    seq order, without duplicates or gaps.

    Join the topic's group before `open`, so no event falls between the read of the log and the first
    live one; feed every live event to `feed`, and call `check` now and then to recover events the
    fan-out lost. Drive a cursor from one task at a time.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.epoch: str | None = None
        self.seq = 0

    def _move(self, to: Position) -> None:
        self.epoch, self.seq = to.epoch, to.seq

    async def open(self, since: int | None, epoch: str | None = None) -> tuple[Position, Step]:
        """From now (``since`` None), or from after ``since``: the position, and the missed events or a Reset."""
        if since is None:
            now = await position(self.topic)
            self._move(now)
            return now, []
        found = await backlog(self.topic, since, epoch=epoch)
        self._move(found.position)
        return found.position, (found.events if found.events is not None else Reset(found.position))

    async def restart(self) -> Reset:
        """Moves to the end of the log; the subscriber needs a snapshot."""
        now = await position(self.topic)
        self._move(now)
        return Reset(now)

    async def feed(self, event: Event) -> Step:
        """What to deliver now that the fan-out brought ``event``: nothing if already delivered, the event
        itself if next, else everything up to it from the log (or a Reset). An event of another epoch
        (the first of a topic that had none) is only a reason to read the log, which decides."""
        if event.epoch == self.epoch:
            if event.seq <= self.seq:
                return []
            if event.seq == self.seq + 1:
                self.seq = event.seq
                return [event]
        return await self.catch_up()

    async def check(self, now: Position | None = None) -> Step:
        """Catches up if the log has moved past the cursor (an event the fan-out lost)."""
        now = now if now is not None else await position(self.topic)
        if now.epoch == self.epoch and now.seq == self.seq:
            return []
        return await self.catch_up()

    async def catch_up(self) -> Step:
        # A cursor without an epoch saw an empty topic: whatever epoch there is now, it wants it from seq 1.
        found = await backlog(self.topic, self.seq, epoch=self.epoch)
        self._move(found.position)
        return found.events if found.events is not None else Reset(found.position)
