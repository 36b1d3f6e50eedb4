"""app/events: the outbox keeps every event through a Redis outage and publishes it once, in order."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import connections, transaction
from django.utils import timezone

from app.events import relay
from app.events.models import OutboxEvent
from app.events.relay import Backoff, outbox_relay, relay_pending
from app.events.services import outbox_prune, publish_on_commit
from realtime import bus
from tests.envsetup import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _log(topic: str) -> list[tuple[int, dict]]:
    """(seq, data) of every event in the topic's Redis log."""
    client: Any = redis.Redis.from_url(os.environ["REDIS_URL"])
    return [(int(entry_id.split(b"-")[0]), json.loads(fields[b"d"]))
            for entry_id, fields in client.xrange(bus._keys(topic)[2])]


def _epoch(topic: str) -> str:
    client: Any = redis.Redis.from_url(os.environ["REDIS_URL"])
    value = client.get(bus._keys(topic)[1])
    assert value is not None
    return str(value.decode())


@pytest.fixture
def topics() -> Iterator[list[str]]:
    names = [f"outboxtest:{uuid.uuid4().hex[:12]}" for _ in range(3)]
    yield names
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(*(k for n in names for k in bus._keys_with_ids(n)))


@pytest.fixture(autouse=True)
def _fresh_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "_backoff", Backoff(60.0, 60.0))


@pytest.fixture
def redis_down(settings) -> Iterator[Callable[[], None]]:
    """The bus's client points at a port nothing listens on, as when Redis is down; calling the
    fixture's value brings it back."""
    url = settings.REDIS_URL

    def back() -> None:
        settings.REDIS_URL = url
        bus._sync_client = None
        relay.backoff().succeeded()

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    bus._sync_client = None
    yield back
    back()


def test_an_event_goes_out_when_its_transaction_commits(topics):
    topic = topics[0]
    with transaction.atomic():
        publish_on_commit(topic, "thing.made", {"n": 1})
        assert _log(topic) == []  # nobody hears of it before the commit
        assert OutboxEvent.objects.get(topic=topic).published_at is None
    assert _log(topic) == [(1, {"n": 1})]
    row = OutboxEvent.objects.get(topic=topic)
    assert row.published_at is not None and (row.seq, row.epoch) == (1, _epoch(topic))


def test_a_rolled_back_event_is_never_heard_of(topics):
    with pytest.raises(RuntimeError), transaction.atomic():
        publish_on_commit(topics[0], "thing.made", {"n": 1})
        raise RuntimeError("the change fails")
    assert not OutboxEvent.objects.filter(topic=topics[0]).exists()
    assert outbox_relay(topics=topics) == 0 and _log(topics[0]) == []


def test_a_malformed_event_fails_the_caller_and_writes_nothing(topics):
    for topic, type_, data in ((topics[0], "reset", {}), ("no topic", "x", {}), (topics[0], "x", [1])):
        with pytest.raises((ValueError, TypeError)), transaction.atomic():
            publish_on_commit(topic, type_, data)  # type: ignore[arg-type]
    assert not OutboxEvent.objects.filter(topic__in=[*topics, "no topic"]).exists()


def test_events_wait_out_a_redis_outage_and_then_go_out_in_order(topics, redis_down):
    a, b = topics[0], topics[1]
    for i in range(1, 4):
        with transaction.atomic():
            publish_on_commit(a, "tick", {"i": i})
            publish_on_commit(b, "tick", {"i": i})
    # Nothing was lost and nothing raised into the writers: the events wait in the outbox.
    assert OutboxEvent.objects.filter(topic__in=[a, b], published_at__isnull=True).count() == 6
    assert relay.backoff().failures == 1, "the first failed kick backs off; the others did not retry"
    assert relay_pending() == 0  # still backing off
    redis_down()  # back up
    with transaction.atomic():
        publish_on_commit(a, "tick", {"i": 4})  # the next commit's kick flushes its topic, oldest first
    assert _log(a) == [(i, {"i": i}) for i in range(1, 5)]
    assert _log(b) == []
    assert relay_pending() == 3  # the loop's pass takes the rest
    assert _log(b) == [(i, {"i": i}) for i in range(1, 4)]
    rows = OutboxEvent.objects.filter(topic__in=[a, b]).order_by("id")
    assert all(r.published_at is not None for r in rows)
    assert [(r.topic, r.seq) for r in rows if r.topic == b] == [(b, 1), (b, 2), (b, 3)]


def test_an_outage_in_the_middle_of_a_pass_keeps_the_rest_pending(topics, monkeypatch):
    topic = topics[0]
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(topic=topic, type="tick", data=json.dumps({"i": i})) for i in range(1, 6)])
    real_append = bus.append_sync
    calls = 0

    def flaky(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise redis.ConnectionError("Redis went away")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(bus, "append_sync", flaky)
    with pytest.raises(redis.ConnectionError):
        outbox_relay(topics=[topic])
    assert list(OutboxEvent.objects.filter(topic=topic).values_list("seq", flat=True)) == [1, 2, None, None, None]
    assert outbox_relay(topics=[topic]) == 3
    assert _log(topic) == [(i, {"i": i}) for i in range(1, 6)]


def test_a_kick_takes_one_batch_and_the_loop_the_rest_of_a_backlog(topics, monkeypatch):
    topic = topics[0]
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(topic=topic, type="tick", data=json.dumps({"i": i})) for i in range(1, 251)])
    # Counted by passes, not by what reached the log: a live server of an earlier test shares this
    # database, and its relay loop may take part of the backlog meanwhile (the bus dedupes the overlap).
    passes: list[int] = []
    real_relay = relay.outbox_relay

    def counted(**kwargs):
        passes.append(real_relay(**kwargs))
        return passes[-1]

    monkeypatch.setattr(relay, "outbox_relay", counted)
    relay.kick([topic])  # after a commit: never holds the committing request up for a whole backlog
    assert len(passes) == 1 and passes[0] <= relay.RELAY_BATCH
    relay_pending(topics=[topic])
    assert _log(topic) == [(i, {"i": i}) for i in range(1, 251)]


def test_a_retried_relay_never_publishes_an_event_twice(topics, monkeypatch):
    topic = topics[0]
    for i in range(1, 4):
        publish_on_commit(topic, "tick", {"i": i})  # autocommit: each goes out at once
    assert _log(topic) == [(1, {"i": 1}), (2, {"i": 2}), (3, {"i": 3})]
    # The relay's record was lost (the database went away after Redis took the events, or the process
    # died): the rows look pending again and are relayed again.
    OutboxEvent.objects.filter(topic=topic).update(published_at=None, seq=None, epoch="")
    publish_on_commit(topic, "tick", {"i": 4})
    assert _log(topic) == [(i, {"i": i}) for i in range(1, 5)]
    assert list(OutboxEvent.objects.filter(topic=topic).values_list("seq", flat=True)) == [1, 2, 3, 4]


def test_concurrent_relays_publish_each_event_once_and_in_order(topics):
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(topic=topics[i % 3], type="tick", data=json.dumps({"i": i})) for i in range(150)])
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            while outbox_relay(topics=topics, limit=20) == 20:
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for k, topic in enumerate(topics):
        expected = [i for i in range(150) if i % 3 == k]
        assert _log(topic) == [(n, {"i": i}) for n, i in enumerate(expected, start=1)]
        assert list(OutboxEvent.objects.filter(topic=topic).values_list("seq", flat=True)) == \
            list(range(1, len(expected) + 1))


def test_a_row_the_bus_refuses_is_dropped_without_blocking_its_topic(topics):
    topic = topics[0]
    OutboxEvent.objects.create(topic=topic, type="reset", data="{}")  # written past publish_on_commit's checks
    publish_on_commit(topic, "tick", {"i": 1})
    assert _log(topic) == [(1, {"i": 1})]
    dropped = OutboxEvent.objects.get(topic=topic, type="reset")
    assert dropped.published_at is not None and dropped.seq is None


def test_prune_deletes_old_published_rows_only(topics, redis_down):
    old, recent = timezone.now() - timedelta(hours=30), timezone.now() - timedelta(hours=1)
    rows = OutboxEvent.objects.bulk_create([
        OutboxEvent(topic=topics[0], type="tick", data="{}", published_at=old, seq=1),
        OutboxEvent(topic=topics[0], type="tick", data="{}", published_at=recent, seq=2),
        OutboxEvent(topic=topics[1], type="tick", data="{}"),  # pending (Redis has been down for a day)
    ])
    OutboxEvent.objects.filter(pk=rows[2].pk).update(created_at=old)
    assert outbox_prune() == 1  # default retention: 24 hours
    assert sorted(OutboxEvent.objects.filter(topic__in=topics).values_list("pk", flat=True)) == \
        sorted(r.pk for r in rows[1:])
    assert outbox_prune(before=timezone.now()) == 1
    assert list(OutboxEvent.objects.filter(topic__in=topics).values_list("pk", flat=True)) == [rows[2].pk]


def test_backoff_doubles_up_to_its_cap_and_resets_on_success():
    now = [100.0]
    state = Backoff(1.0, 10.0, clock=lambda: now[0])
    assert state.remaining() == 0
    assert [state.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert state.remaining() == 10.0
    now[0] += 4
    assert state.remaining() == 6.0
    assert state.succeeded() == 6 and state.remaining() == 0 and state.failed() == 1.0
