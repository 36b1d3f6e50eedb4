"""Failed-login limit per (client address, username), kept in Redis so every ASGI process shares it."""

from __future__ import annotations

import hashlib

from django.conf import settings

from app.core.errors import RateLimited
from app.core.redis import get_redis


def _key(client_ip: str, username: str) -> str:
    digest = hashlib.sha256(f"{client_ip}\0{username.lower()}".encode()).hexdigest()[:32]
    return f"tw:login-fail:{digest}"


async def login_attempt_check(*, client_ip: str, username: str) -> None:
    redis = get_redis()
    key = _key(client_ip, username)
    failures = await redis.get(key)
    if failures is not None and int(failures) >= settings.LOGIN_RATE_LIMIT:
        ttl = await redis.ttl(key)
        retry = max(int(ttl), 1)
        raise RateLimited(
            "too many failed login attempts; try again later",
            details={"retry_after": retry},
            headers={"Retry-After": str(retry)},
        )


async def login_failure_record(*, client_ip: str, username: str) -> None:
    redis = get_redis()
    key = _key(client_ip, username)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, settings.LOGIN_RATE_WINDOW, nx=True)
        await pipe.execute()
