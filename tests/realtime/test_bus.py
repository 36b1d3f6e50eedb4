"""realtime/bus.py and realtime/topics.py against the test Redis: seq, log, epoch, replay, cursors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from app.accounts.models import User
from realtime import bus, topics
from realtime.bus import Cursor, Event, Reset, backlog, position, publish, publish_sync, replay


def _drop_topic(name: str) -> None:
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(*bus._keys_with_ids(name))


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    name = f"bustest:{uuid.uuid4().hex[:12]}"
    yield name
    _drop_topic(name)


async def test_publish_numbers_events_and_logs_them(topic):
    first = await publish(topic, "job.progress", {"step": 1})
    second = await publish(topic, "job.progress", {"step": 2, "note": "ünïcode"})
    assert (first.seq, second.seq) == (1, 2)
    assert first.epoch == second.epoch and re.fullmatch(r"[0-9a-f]{16}", first.epoch)
    wire = json.loads(second.text)
    assert list(wire) == ["type", "topic", "seq", "epoch", "ts", "data"]
    assert wire == {"type": "job.progress", "topic": topic, "seq": 2, "epoch": first.epoch, "ts": second.ts,
                    "data": {"step": 2, "note": "ünïcode"}}
    assert second.ts >= first.ts > 1.6e9
    logged = await replay(topic, 0)
    assert logged is not None and [e.text for e in logged] == [first.text, second.text]
    assert await position(topic) == bus.Position(epoch=first.epoch, seq=2)


async def test_publish_refuses_bad_input(topic):
    with pytest.raises(ValueError):
        await publish("no-colon", "x", {})
    with pytest.raises(ValueError):
        await publish("job:has space", "x", {})
    with pytest.raises(ValueError):
        await publish(topic, "reset", {})
    with pytest.raises(ValueError):
        await publish(topic, "", {})
    with pytest.raises(TypeError):
        await publish(topic, "x", [1, 2])
    with pytest.raises(TypeError):
        await publish(topic, "x", {"not json": object()})
    assert await position(topic) == bus.Position(epoch=None, seq=0)


async def test_seq_is_contiguous_under_concurrent_async_and_sync_publishers(topic):
    async def async_publisher(n: int) -> list[int]:
        return [(await publish(topic, "tick", {"by": "async", "i": i})).seq for i in range(n)]

    def sync_publisher(n: int) -> list[int]:
        return [publish_sync(topic, "tick", {"by": "sync", "i": i}).seq for i in range(n)]

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sync_runs = [loop.run_in_executor(pool, sync_publisher, 25) for _ in range(4)]
        results = await asyncio.gather(*(async_publisher(50) for _ in range(6)), *sync_runs)
    for seqs in results:
        assert seqs == sorted(seqs)  # each publisher sees its own events in order
    everything = sorted(s for seqs in results for s in seqs)
    assert everything == list(range(1, 401))
    logged = await replay(topic, 0)
    assert logged is not None and [e.seq for e in logged] == list(range(1, 401))
    assert len({e.epoch for e in logged}) == 1


async def test_a_keyed_event_is_logged_once(topic):
    first = await publish(topic, "e", {"i": 1}, key="row-1")
    again = await publish(topic, "e", {"i": 1}, key="row-1")  # a publisher retrying: same seq, no new entry
    other = await publish(topic, "e", {"i": 2}, key="row-2")
    assert (first.seq, again.seq, other.seq) == (1, 1, 2)
    assert again.epoch == first.epoch and again.ts == first.ts
    logged = await replay(topic, 0)
    assert logged is not None and [e.data for e in logged] == [{"i": 1}, {"i": 2}]


async def test_keys_are_remembered_for_a_window_and_within_an_epoch(topic, monkeypatch):
    monkeypatch.setattr(bus, "DEDUPE_WINDOW", 3)
    for i in range(1, 6):
        await publish(topic, "e", {}, key=f"k{i}")
    assert (await publish(topic, "e", {}, key="k3")).seq == 3
    assert (await publish(topic, "e", {}, key="k1")).seq == 6  # out of the window: forgotten
    old_epoch = (await position(topic)).epoch
    # The counter is gone (the topic expired, or Redis lost it): the new epoch remembers no old key.
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(bus._keys(topic)[0])
    fresh = await publish(topic, "e", {}, key="k5")
    assert fresh.seq == 1 and fresh.epoch != old_epoch


async def test_publish_sync_refuses_to_run_on_the_loop(topic):
    with pytest.raises(RuntimeError, match="await publish"):
        publish_sync(topic, "x", {})


async def test_replay_since_is_exact(topic):
    events = [await publish(topic, "e", {"i": i}) for i in range(1, 21)]
    got = await replay(topic, 7)
    assert got is not None and [e.text for e in got] == [e.text for e in events[7:]]
    assert got[0].data == {"i": 8}
    assert await replay(topic, 20) == []
    assert await replay(topic, 21) is None  # beyond the end: not this topic's history
    assert await replay(topic, 0, epoch=events[0].epoch) == events
    assert await replay(topic, 5, epoch="someoldepoch") is None


async def test_trimmed_log_cannot_replay(topic, settings):
    settings.EVENT_LOG_MAXLEN = 10
    for i in range(300):
        await publish(topic, "e", {"i": i})
    assert await replay(topic, 0) is None
    found = await backlog(topic, 0)
    assert found.events is None and found.position.seq == 300
    recent = await replay(topic, 290)
    assert recent is not None and [e.seq for e in recent] == list(range(291, 301))
    length = redis.Redis.from_url(os.environ["REDIS_URL"]).xlen(bus._keys(topic)[2])
    assert 10 <= length < 300


async def test_lost_data_starts_a_new_epoch(topic):
    old = [await publish(topic, "e", {"i": i}) for i in range(5)]
    _drop_topic(topic)  # what a Redis restart without persistence does to the topic
    assert await position(topic) == bus.Position(epoch=None, seq=0)
    assert await replay(topic, 5, epoch=old[0].epoch) is None
    fresh = [await publish(topic, "e", {"i": i}) for i in range(3)]
    assert [e.seq for e in fresh] == [1, 2, 3] and fresh[0].epoch != old[0].epoch
    # Seq 2 exists again, but in another history: a client that names its epoch is not fooled.
    assert await replay(topic, 2, epoch=old[0].epoch) is None
    assert await replay(topic, 2, epoch=fresh[0].epoch) == fresh[2:]
    # Losing only the counter also starts over rather than reuse numbers.
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(bus._keys(topic)[0])
    again = await publish(topic, "e", {})
    assert again.seq == 1 and again.epoch not in (old[0].epoch, fresh[0].epoch)
    assert await replay(topic, 0, epoch=again.epoch) == [again]


async def test_an_idle_topic_expires_after_the_retention(topic, settings):
    settings.EVENT_LOG_RETENTION_DAYS = 1
    await publish(topic, "e", {})
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    assert all(86_000 < client.ttl(key) <= 86_400 for key in bus._keys(topic))


def test_group_names_are_valid_and_distinct():
    names = ["job:1", "user:ada@example.org", "model:a.b", "model:a_b", "user:" + "x" * 200, "user:ödön+1"]
    groups = [bus.group_name(n) for n in names]
    assert len(set(groups)) == len(groups)
    for group in groups:
        assert re.fullmatch(r"[a-zA-Z0-9_.-]+", group) and len(group) < 100


async def test_cursor_orders_live_events_and_fills_gaps(topic):
    await publish(topic, "e", {})
    cursor = Cursor(topic)
    now, step = await cursor.open(None)
    assert now.seq == 1 and step == []
    e2, e3, e4 = [await publish(topic, "e", {"i": i}) for i in range(3)]
    assert await cursor.feed(e2) == [e2]
    # The fan-out delivered seq 4 before 3 (two publishers racing): both come out, in order, once.
    assert await cursor.feed(e4) == [e3, e4]
    assert await cursor.feed(e3) == []
    assert await cursor.feed(e4) == []
    e5 = await publish(topic, "e", {})
    assert await cursor.check() == [e5]  # the fan-out lost it; the position check finds it
    assert await cursor.check() == []


async def test_a_cursor_on_an_empty_topic_takes_the_first_epoch_from_the_log(topic):
    cursor = Cursor(topic)
    assert await cursor.open(None) == (bus.Position(epoch=None, seq=0), [])
    foreign = Event.build(topic=topic, type="e", seq=1, epoch="0123456789abcdef", ts_ms=0, data_json="{}")
    assert await cursor.feed(foreign) == []  # not in this Redis's log: ignored
    e1, e2 = await publish(topic, "e", {}), await publish(topic, "e", {})
    assert await cursor.feed(e1) == [e1, e2]
    assert await cursor.feed(e2) == []


async def test_cursor_resets_when_the_epoch_changes(topic):
    await publish(topic, "e", {})
    cursor = Cursor(topic)
    _, step = await cursor.open(0)
    assert isinstance(step, list) and len(step) == 1
    _drop_topic(topic)
    fresh = await publish(topic, "e", {})
    step = await cursor.feed(fresh)
    assert isinstance(step, Reset) and step.position == bus.Position(epoch=fresh.epoch, seq=1)
    after = await publish(topic, "e", {})
    assert await cursor.feed(after) == [after]


async def test_cursor_open_from_a_trimmed_position_resets(topic, settings):
    settings.EVENT_LOG_MAXLEN = 5
    for _ in range(250):
        await publish(topic, "e", {})
    now, step = await Cursor(topic).open(3)
    assert isinstance(step, Reset) and step.position == now and now.seq == 250


def test_event_round_trips_through_a_layer_message():
    event = Event.build(topic="job:1", type="job.done", seq=4, epoch="ab", ts_ms=1_700_000_000_123,
                        data_json='{"ok":true}')
    assert Event.from_message(event.message()) == event
    assert event.ts == 1_700_000_000.123 and event.data == {"ok": True}


# Topic registry


def _user(username: str, role: str = "member", active: bool = True) -> User:
    return User(username=username, role=role, is_active=active)


async def test_user_topic_is_readable_by_its_user_and_admins():
    await topics.topic_authorize(user=_user("ada"), topic="user:ada")
    await topics.topic_authorize(user=_user("root", role="admin"), topic="user:ada")
    for user in (_user("bob"), _user("ada", active=False), _user("boss", role="maintainer")):
        with pytest.raises(topics.TopicError) as info:
            await topics.topic_authorize(user=user, topic="user:ada")
        assert info.value.code == "forbidden"
    assert await topics.topic_snapshot(topic="user:ada") == {"username": "ada"}


async def test_unknown_and_malformed_topics_are_refused():
    for name in ("nope:1", "user", "", "user:a b", "USER:ada"):
        with pytest.raises(topics.TopicError) as info:
            await topics.topic_authorize(user=_user("ada", role="admin"), topic=name)
        assert info.value.code == "unknown_topic"


async def test_registered_prefix_and_handler_refusals():
    from app.core.errors import NotFound

    async def authorize(user: User, name: str) -> bool:
        if name.endswith(":missing"):
            raise NotFound("no such thing")
        return name.endswith(":open")

    async def snapshot(name: str) -> dict[str, object]:
        return {"name": name}

    topics.register_topic("regtest", authorize=authorize, snapshot=snapshot)
    try:
        with pytest.raises(ValueError):
            topics.register_topic("regtest", authorize=authorize, snapshot=snapshot)
        handler = await topics.topic_authorize(user=_user("ada"), topic="regtest:open")
        assert handler.prefix == "regtest"
        assert await topics.topic_snapshot(topic="regtest:open") == {"name": "regtest:open"}
        for name in ("regtest:closed", "regtest:missing"):  # the same refusal whether or not it exists
            with pytest.raises(topics.TopicError) as info:
                await topics.topic_authorize(user=_user("ada"), topic=name)
            assert (info.value.code, info.value.message) == ("forbidden", "no such topic, or you may not read it")
    finally:
        topics.unregister_topic("regtest")


async def test_replay_from_an_absurd_position_is_none(topic):
    await publish(topic, "e", {})
    assert await replay(topic, 10**30) is None
    assert await replay(topic, -5) is None
