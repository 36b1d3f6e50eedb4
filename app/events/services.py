"""The transactional outbox (docs/events.md, "Publishing"). An event is a row written in the same
transaction as the change it announces; the relay (relay.py) hands pending rows to the bus
(realtime/bus.py) once the transaction has committed and Redis answers, oldest first, and marks them.
So an event is never heard of before its change commits, and never lost because Redis was away then.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from realtime import bus

from . import relay
from .models import OutboxEvent

PRUNE_CHUNK = 5000


def publish_on_commit(topic: str, type: str, data: Mapping[str, Any]) -> None:
    """Records an event on ``topic`` in the current transaction and publishes it after the commit.

    Sync code only (it writes a row). Call it inside the transaction that makes the change the event
    announces; a rollback takes the event with it. If Redis does not answer at the commit, the event
    waits in the outbox and the relay publishes it when Redis is back. Per topic, events are published
    in the order their rows were written (for transactions that overlap in time, in no particular
    order between them), each exactly once. Raises ValueError or TypeError for a malformed topic, type
    or data, writing nothing.
    """
    text = bus.encode_event(topic, type, data)
    OutboxEvent.objects.create(topic=topic, type=type, data=text)
    transaction.on_commit(lambda: relay.kick([topic]), robust=True)


def outbox_prune(*, before: datetime | None = None) -> int:
    """Deletes events published before ``before`` (default: EVENT_OUTBOX_RETENTION_HOURS ago), in short
    transactions; pending ones stay, however old. Returns how many rows went."""
    if before is None:
        before = timezone.now() - timedelta(hours=settings.EVENT_OUTBOX_RETENTION_HOURS)
    deleted = 0
    while True:
        ids = list(OutboxEvent.objects.filter(published_at__lt=before).values_list("id", flat=True)[:PRUNE_CHUNK])
        if not ids:
            return deleted
        deleted += OutboxEvent.objects.filter(id__in=ids).delete()[0]
