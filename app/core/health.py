"""Liveness and readiness. Readiness asks each dependency with a timeout and never touches a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from app.core.db import db_async
from app.core.lifecycle import state
from app.core.redis import get_redis
from app.core.storage import get_storage


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _db_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_database() -> None:
    await db_async(_db_ping)()


async def _check_redis() -> None:
    await get_redis().ping()


async def _check_storage() -> None:
    await get_storage().check()


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": _check_database,
    "redis": _check_redis,
    "storage": _check_storage,
}


async def _run(check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), timeout=settings.READINESS_TIMEOUT)
    except TimeoutError:
        return f"timed out after {settings.READINESS_TIMEOUT:g}s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return "ok"


# Without these the process still serves: inference answers cached callers through a database outage
# (app/core/db.py), so taking every instance out of the load balancer would only turn that into errors.
DEGRADED_WITHOUT = frozenset({"database"})


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 ``ready``; 200 ``degraded`` when only the database is unreachable; 503 ``unavailable`` when
    anything else fails or the process is draining."""
    names = list(CHECKS)
    results = await asyncio.gather(*(_run(CHECKS[name]) for name in names))
    body: dict[str, object] = dict(zip(names, results, strict=True))
    failed = {name for name, result in zip(names, results, strict=True) if result != "ok"}
    ready = not (failed - DEGRADED_WITHOUT) and not state.draining
    if state.draining:
        body["draining"] = True
    body["status"] = ("degraded" if failed else "ready") if ready else "unavailable"
    return JsonResponse(body, status=200 if ready else 503)
