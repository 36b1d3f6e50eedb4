"""A short-lived, per-process cache of authenticated bearer credentials.

Without it every authenticated request pays a thread hop, one or two queries and a connection hand-back
for `services.credential_authenticate`. A hit costs one sha256 and a dict lookup on the event loop.

- Keyed by the sha256 of the raw credential; the credential itself is never kept.
- An entry lives ``AUTH_CACHE_SECONDS`` (``TORCHWIRE_AUTH_CACHE_SECONDS``, 0 disables the cache), and
  never past the credential's own expiry (a JWT's ``exp``).
- Only successes are cached: an unknown, wrong or revoked credential reaches the database every time.
- Concurrent misses for one credential share one lookup, so an entry expiring under load costs one
  query, not one per waiting request.
- Revoking a key or a token through `services`, and saving or deleting a user or an API key, calls
  `forget_all` when the transaction commits (`signals.py`): this process stops accepting the credential
  at once. Other processes, and changes made with ``QuerySet.update()`` or SQL, take up to
  ``AUTH_CACHE_SECONDS`` (docs/security.md).
- While the database is unreachable (`app.core.db.outage`) an expired entry is still accepted, for up
  to ``DB_OUTAGE_STALE_SECONDS`` past its expiry and never past the credential's own: cached callers
  keep predicting through a database restart. A credential not cached then gets 503 (`DatabaseUnavailable`).
  A refresh that answers anything else (a revoked key: `Unauthorized`) drops the entry.

The cached `Principal` (and its `User`) is shared by every request that presents the credential: treat
it as read-only. `authenticate` runs on an event loop; `forget_all` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from app.core import invalidation
from app.core.db import STALE_WAIT_SECONDS, DatabaseUnavailable, db_async, outage

from .services import Principal, credential_authenticate

MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    expires: float  # time.monotonic()
    stale_until: float  # the last moment it may stand in while the database is unreachable


_entries: dict[bytes, _Entry] = {}
_inflight: dict[bytes, asyncio.Task[Principal]] = {}
_generations = itertools.count()
_generation = next(_generations)


async def authenticate_header(authorization: str) -> Principal | None:
    """The principal behind an ``Authorization`` header value, or None when it carries no bearer
    credential; a wrong credential raises like `authenticate`."""
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return await authenticate(credential)


async def authenticate(raw: str) -> Principal:
    """The principal behind a bearer credential (API key or JWT access token); raises what
    `services.credential_authenticate` raises (`Unauthorized`)."""
    if settings.AUTH_CACHE_SECONDS <= 0:
        return await _check(raw)
    key = hashlib.sha256(raw.encode()).digest()
    entry = _entries.get(key)
    now = time.monotonic()
    if entry is not None:
        if entry.expires > now:
            return entry.principal
        if entry.stale_until <= now:
            _entries.pop(key, None)
            entry = None
        elif outage.down:
            outage.served_stale()
            return entry.principal
    loop = asyncio.get_running_loop()
    lookup = _inflight.get(key)
    if lookup is None or lookup.get_loop() is not loop:
        lookup = loop.create_task(_check(raw), name="auth-cache-lookup")
        _inflight[key] = lookup
        lookup.add_done_callback(functools.partial(_landed, key, _generation))
    # Shielded: a request that gives up (client gone, or the database slow to refresh an entry it can do
    # without) must not cancel the lookup others wait on.
    if entry is None:
        return await asyncio.shield(lookup)
    try:
        return await asyncio.wait_for(asyncio.shield(lookup), STALE_WAIT_SECONDS)
    except (TimeoutError, DatabaseUnavailable):
        outage.served_stale()
        return entry.principal


async def _check(raw: str) -> Principal:
    return await db_async(credential_authenticate)(raw=raw)


def _landed(key: bytes, generation: int, lookup: asyncio.Task[Principal]) -> None:
    if _inflight.get(key) is lookup:
        del _inflight[key]
    if lookup.cancelled():
        return
    if (error := lookup.exception()) is not None:
        if not isinstance(error, DatabaseUnavailable):
            _entries.pop(key, None)  # refused now (revoked, user deactivated): the old answer is void
        return
    if generation != _generation:
        # A revocation committed while the lookup ran: its answer may predate it, so don't keep it.
        return
    principal = lookup.result()
    now = time.monotonic()
    expires = now + settings.AUTH_CACHE_SECONDS
    hard_limit = math.inf
    if principal.expires_at is not None:
        hard_limit = now + (principal.expires_at - datetime.now(UTC)).total_seconds()
    expires = min(expires, hard_limit)
    if expires <= now:
        return
    while len(_entries) >= MAX_ENTRIES:
        try:
            del _entries[next(iter(_entries))]  # the oldest: dicts keep insertion order
        except (KeyError, RuntimeError, StopIteration):  # emptied by forget_all on another thread
            break
    _entries[key] = _Entry(principal, expires, min(expires + settings.DB_OUTAGE_STALE_SECONDS, hard_limit))


def forget_all() -> None:
    """Drops every cached principal, and keeps lookups already running from caching their answers."""
    global _generation
    _generation = next(_generations)
    _entries.clear()
    _inflight.clear()


invalidation.on_change(invalidation.CREDENTIALS, lambda _key: forget_all())
