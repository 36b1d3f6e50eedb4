"""realtime/hub.py against the test Redis and the real Channels layer: one subscription per topic per
process, events handed to every local sink from memory, and the cursors' promises kept per sink."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from realtime import bus
from realtime.bus import Cursor, Event, Reset, Step, publish
from realtime.hub import Hub, Subscription, get_hub


class Sink:
    """Records what it is given; ``room`` bounds how many live events it takes before refusing."""

    def __init__(self, room: int = 10_000) -> None:
        self.items: list[Event | Reset] = []
        self.room = room
        self.active = True
        self.refused = 0
        self.grown = asyncio.Event()

    def grow(self, room: int) -> None:
        self.room = room
        self.grown.set()

    def push(self, event: Event) -> bool:
        if len(self.items) >= self.room:
            self.refused += 1
            return False
        self.items.append(event)
        return True

    async def deliver(self, step: Step) -> None:
        while len(self.items) >= self.room:  # waits for room, as an SSE stream's queue does
            self.grown.clear()
            await self.grown.wait()
        self.items.extend([step] if isinstance(step, Reset) else step)

    def seqs(self) -> list[int]:
        return [item.seq for item in self.items if isinstance(item, Event)]


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _numsub(topic: str) -> int:
    """How many Redis pub/sub subscriptions the topic's group has (the layer prefixes its channels)."""
    layer = bus.get_channel_layer()._get_layer()  # type: ignore[union-attr]
    name = layer._get_group_channel_name(bus.group_name(topic))
    return int(_redis().pubsub_numsub(name)[0][1])


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    name = f"hubtest:{uuid.uuid4().hex[:12]}"
    yield name
    hub = get_hub()
    state = hub._topics.get(name)
    for sub in list(state.subs) if state is not None else ():
        await hub.unsubscribe(sub)
    assert name not in hub.topics()
    _redis().delete(*bus._keys_with_ids(name))


async def _subscribe(hub: Hub, topic: str, sink: Sink, since: int | None = None,
                     epoch: str | None = None) -> Subscription:
    sub, _, step = await hub.subscribe(topic, sink, lambda cursor: cursor.open(since, epoch))
    await sink.deliver(step)
    hub.started(sub)
    return sub


async def _until(predicate: object, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _append_without_fan_out(topic: str, count: int) -> list[Event]:
    """Events that reach the log but not pub/sub (a lost fan-out)."""
    def append() -> list[Event]:
        return [bus.append_sync(topic, "e", bus.encode_event(topic, "e", {"i": i})) for i in range(count)]
    return await asyncio.to_thread(append)


async def test_one_subscription_per_topic_and_one_text_for_every_sink(topic):
    hub = get_hub()
    sinks = [Sink() for _ in range(50)]
    subs = [await _subscribe(hub, topic, sink) for sink in sinks]
    assert hub.subscribers(topic) == 50 and topic in hub.topics()
    assert _numsub(topic) == 1
    published = [await publish(topic, "e", {"i": i}) for i in range(5)]
    await _until(lambda: all(len(sink.items) == 5 for sink in sinks))
    for sink in sinks:
        assert sink.seqs() == [1, 2, 3, 4, 5]
        assert [item.text for item in sink.items] == [event.text for event in published]  # type: ignore[union-attr]
    # Decoded once per process: every sink holds the very same string.
    assert len({id(sink.items[0].text) for sink in sinks}) == 1  # type: ignore[union-attr]
    for sub in subs[:-1]:
        await hub.unsubscribe(sub)
    assert _numsub(topic) == 1 and hub.subscribers(topic) == 1
    await hub.unsubscribe(subs[-1])
    assert _numsub(topic) == 0 and topic not in hub.topics()
    await publish(topic, "e", {})
    await asyncio.sleep(0.2)
    assert all(len(sink.items) == 5 for sink in sinks)


async def test_resuming_sink_gets_replay_then_live_without_gap_or_duplicate(topic):
    hub = get_hub()
    first = Sink()
    await _subscribe(hub, topic, first)
    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            await publish(topic, "e", {})
            await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    await _until(lambda: len(first.items) >= 20)
    epoch = first.items[0].epoch  # type: ignore[union-attr]
    late = Sink()
    await _subscribe(hub, topic, late, since=3, epoch=epoch)
    await _until(lambda: len(late.items) >= 60)
    stop.set()
    await flooding
    last = (await bus.position(topic)).seq
    await _until(lambda: first.seqs()[-1:] == [last] and late.seqs()[-1:] == [last])
    assert first.seqs() == list(range(1, last + 1))
    assert late.seqs() == list(range(4, last + 1))


async def test_a_lost_fan_out_is_read_from_the_log_once_for_all_sinks(topic, monkeypatch):
    hub = get_hub()
    sinks = [Sink() for _ in range(20)]
    for sink in sinks:
        await _subscribe(hub, topic, sink)
    await publish(topic, "e", {})
    await _until(lambda: all(sink.seqs() == [1] for sink in sinks))
    await _append_without_fan_out(topic, 3)  # seqs 2-4 never come live
    reads = 0
    real = bus.backlog

    async def counting(*args: object, **kwargs: object) -> bus.Backlog:
        nonlocal reads
        reads += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "backlog", counting)
    await publish(topic, "e", {})  # seq 5: the hub sees the gap and reads 2-5 from the log
    await _until(lambda: all(sink.seqs() == [1, 2, 3, 4, 5] for sink in sinks))
    assert reads == 1


async def test_the_position_check_recovers_events_no_live_message_announced(topic, settings):
    settings.WS_PING_SECONDS = 0.2
    hub = get_hub()
    sink = Sink()
    sub = await _subscribe(hub, topic, sink)
    await _append_without_fan_out(topic, 2)
    await _until(lambda: sink.seqs() == [1, 2], within=30)
    await hub.unsubscribe(sub)


async def test_a_sink_that_refuses_catches_up_from_the_log_when_it_has_room(topic):
    hub = get_hub()
    slow, fast = Sink(room=3), Sink()
    await _subscribe(hub, topic, slow)
    await _subscribe(hub, topic, fast)
    for i in range(10):
        await publish(topic, "e", {"i": i})
    await _until(lambda: len(fast.items) == 10)
    assert slow.seqs() == [1, 2, 3] and slow.refused >= 1
    slow.grow(100)
    await _until(lambda: slow.seqs() == list(range(1, 11)))
    await publish(topic, "e", {})
    await _until(lambda: slow.seqs()[-1] == 11 and fast.seqs()[-1] == 11)
    assert fast.seqs() == list(range(1, 12))


async def test_a_new_epoch_gives_each_sink_a_reset(topic):
    hub = get_hub()
    sinks = [Sink(), Sink()]
    for sink in sinks:
        await _subscribe(hub, topic, sink)
    old = await publish(topic, "e", {})
    await _until(lambda: all(len(sink.items) == 1 for sink in sinks))
    _redis().delete(*bus._keys_with_ids(topic))  # Redis lost the topic
    new = await publish(topic, "e", {})
    assert new.epoch != old.epoch and new.seq == 1
    await _until(lambda: all(len(sink.items) >= 2 for sink in sinks))
    for sink in sinks:
        # The live event of the new epoch makes each cursor read the log, which answers with a reset
        # to the log's position (it includes seq 1) or seq 1 itself: never a silent jump.
        follow = sink.items[1]
        assert (isinstance(follow, Reset) and follow.position.epoch == new.epoch) or (
            isinstance(follow, Event) and (follow.epoch, follow.seq) == (new.epoch, 1)), follow


async def test_a_failed_open_leaves_nothing_subscribed(topic):
    hub = get_hub()

    async def failing(cursor: Cursor) -> tuple[bus.Position, Step]:
        raise redis.ConnectionError("down")

    with pytest.raises(redis.ConnectionError):
        await hub.subscribe(topic, Sink(), failing)
    assert topic not in hub.topics() and _numsub(topic) == 0


async def test_concurrent_subscribes_and_unsubscribes_keep_one_subscription(topic):
    hub = get_hub()
    sinks = [Sink() for _ in range(30)]
    subs = await asyncio.gather(*(_subscribe(hub, topic, sink) for sink in sinks))
    assert _numsub(topic) == 1
    await asyncio.gather(*(hub.unsubscribe(sub) for sub in subs[:15]),
                         *(_subscribe(hub, topic, Sink()) for _ in range(5)))
    assert _numsub(topic) == 1 and hub.subscribers(topic) == 20
    await publish(topic, "e", {})
    await _until(lambda: all(sink.seqs() == [1] for sink in sinks[15:]))
    assert all(sink.seqs() == [] for sink in sinks[:15])


async def test_a_layer_sharded_over_two_redis_servers_delivers_every_topic():
    """TORCHWIRE_CHANNEL_LAYER_URLS with two servers (docs/scaling.md): each topic's group lives on one of
    them, the hub subscribes there once, and events published to either reach their sinks."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from tests.private_services import private_redis

    with private_redis("shard") as second:
        hosts = [os.environ["REDIS_URL"], second.url]
        layer = RedisPubSubChannelLayer(hosts=hosts, prefix="tw:layer")
        hub = Hub()
        hub.layer = layer
        names = [f"hubshard:{uuid.uuid4().hex[:8]}-{i}" for i in range(12)]
        sinks = {name: Sink() for name in names}
        subs = [await _subscribe(hub, name, sinks[name]) for name in names]
        try:
            per_server = [
                sum(int(redis.Redis.from_url(url).pubsub_numsub(
                    layer._get_layer()._get_group_channel_name(bus.group_name(name)))[0][1]) for name in names)
                for url in hosts
            ]
            assert sum(per_server) == len(names) and min(per_server) > 0, per_server
            for name in names:
                event = await asyncio.to_thread(bus.append_sync, name, "e", "{}")
                await layer.group_send(bus.group_name(name), event.message())
            await _until(lambda: all(sink.seqs() == [1] for sink in sinks.values()))
        finally:
            for sub in subs:
                await hub.unsubscribe(sub)
            await layer.flush()
            _redis().delete(*[key for name in names for key in bus._keys_with_ids(name)])
