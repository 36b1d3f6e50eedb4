from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it announces, waiting for the relay to
    hand it to the bus (``published_at`` unset), or published with the ``seq`` and ``epoch`` it got.

    ``key`` names the event to the bus, which refuses to log a key twice, so a relay that retries a row
    it may already have published gets the first seq back. ``data`` is the JSON text clients receive.
    A published row with no ``seq`` was dropped as malformed (logged).
    """

    key = models.UUIDField(default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=240)
    type = models.CharField(max_length=100)
    data = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    seq = models.BigIntegerField(null=True, blank=True)
    epoch = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], name="events_outbox_pending", condition=Q(published_at__isnull=True)),
            models.Index(fields=["topic", "id"], name="events_outbox_pending_topic",
                         condition=Q(published_at__isnull=True)),
            models.Index(fields=["published_at"], name="events_outbox_published"),
        ]

    def __str__(self) -> str:
        state = f"seq {self.seq}" if self.published_at else "pending"
        return f"{self.type} on {self.topic} ({state})"
