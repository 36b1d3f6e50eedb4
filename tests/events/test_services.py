"""app/events services, called directly in the test's transaction (tests/events/test_outbox.py covers the
relay across commits, Redis outages and concurrent relays with committed rows)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from app.events.models import OutboxEvent
from app.events.services import outbox_prune, publish_on_commit
from tests.service_support import fresh_relay, published_events, unique, written_events

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures(fresh_relay.__name__)]


def test_events_reach_the_bus_at_the_commit_in_the_order_written(django_capture_on_commit_callbacks):
    topic = unique("svc:events")
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(3):
            publish_on_commit(topic, "tick", {"i": i})
        assert published_events(topic) == []
        assert written_events(topic) == [("tick", {"i": i}) for i in range(3)]
    assert published_events(topic) == [("tick", {"i": i}) for i in range(3)]
    rows = OutboxEvent.objects.filter(topic=topic).order_by("id")
    assert [(r.seq, r.published_at is not None) for r in rows] == [(1, True), (2, True), (3, True)]


def test_an_event_goes_with_the_savepoint_that_wrote_it(django_capture_on_commit_callbacks):
    topic = unique("svc:events")
    with django_capture_on_commit_callbacks(execute=True):
        publish_on_commit(topic, "kept", {"n": 1})
        with pytest.raises(RuntimeError), transaction.atomic():
            publish_on_commit(topic, "lost", {"n": 2})
            raise RuntimeError("the inner change fails")
    assert written_events(topic) == [("kept", {"n": 1})]
    assert published_events(topic) == [("kept", {"n": 1})]


def test_a_malformed_event_raises_before_anything_is_written():
    topic = unique("svc:events")
    for bad_topic, type_, data in ((topic, "reset", {}), ("no topic", "x", {}), (topic, "x", {"v": object()})):
        with pytest.raises((ValueError, TypeError)):
            publish_on_commit(bad_topic, type_, data)
    assert written_events(topic) == [] and not OutboxEvent.objects.filter(topic="no topic").exists()


def test_prune_keeps_pending_and_recent_rows(settings):
    settings.EVENT_OUTBOX_RETENTION_HOURS = 1
    topic = unique("svc:events")
    now = timezone.now()
    old, recent, pending = (OutboxEvent.objects.create(topic=topic, type="t", data="{}") for _ in range(3))
    OutboxEvent.objects.filter(pk=old.pk).update(published_at=now - timedelta(hours=2), seq=1)
    OutboxEvent.objects.filter(pk=recent.pk).update(published_at=now - timedelta(minutes=5), seq=2)
    OutboxEvent.objects.filter(pk=pending.pk).update(created_at=now - timedelta(days=3))
    assert outbox_prune() >= 1
    assert set(OutboxEvent.objects.filter(topic=topic).values_list("pk", flat=True)) == {recent.pk, pending.pk}
