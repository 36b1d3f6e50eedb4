"""Async Redis clients for the ASGI process, one per event loop (redis.asyncio clients are loop-bound)."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def get_redis() -> aioredis.Redis:
    """The shared client for the running loop; call only from a coroutine."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A blocking pool: past max_connections a caller waits (up to `timeout`) for a free connection
        # instead of failing, which a burst of websocket subscriptions would otherwise cause.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=getattr(settings, "REDIS_MAX_CONNECTIONS", 100),
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        client = aioredis.Redis(connection_pool=pool, decode_responses=False)
        _clients[loop] = client
    return client


async def close_redis() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()
