"""Scheduled upkeep of the event logs (Celery beat)."""

from __future__ import annotations

import redis
from django.conf import settings


def events_trim(*, maxlen: int | None = None) -> int:
    """Trims every topic's log to ``maxlen`` entries exactly (publishing trims approximately) and returns
    how many logs it visited. Idle topics expire on their own through the keys' TTL."""
    limit = maxlen if maxlen is not None else settings.EVENT_LOG_MAXLEN
    client = redis.Redis.from_url(settings.REDIS_URL)
    visited = 0
    try:
        for key in client.scan_iter(match="tw:events:log:*", count=500):
            client.xtrim(key, maxlen=limit, approximate=False)
            visited += 1
    finally:
        client.close()
    return visited
