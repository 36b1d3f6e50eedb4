"""The database from async code, and what a serving process does while the database is unreachable.

`db_async` runs ORM code on an executor thread and hands its connection back afterwards. `outage` is
this process's view of the database: closed while connections succeed, open from the moment a new
connection fails (a circuit breaker) until a background probe connects again. While it is open every
new connection fails at once (``app.core.postgres``) instead of waiting out a timeout, so nothing
queues behind a dead database: inference answers from what `auth_cache` and `catalog` hold (stale
entries up to ``DB_OUTAGE_STALE_SECONDS``), everything else answers 503 with ``Retry-After``.

`DatabaseUnavailable` is what callers see (an `ApiError`, so the API's handler renders it);
`unavailable_error` maps the driver's and Django's exceptions to it in one place. The outage logs two
lines, one when it starts and one when it ends, and no tracebacks.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.utils import InterfaceError as DjangoInterfaceError
from django.http.response import HttpResponseBase
from prometheus_client import Counter
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from app.core.errors import Unavailable

P = ParamSpec("P")
R = TypeVar("R")
ResponseT = TypeVar("ResponseT", bound=HttpResponseBase)

logger = logging.getLogger(__name__)

# Seconds between connection attempts while the database is unreachable (Retry-After says twice that).
PROBE_SECONDS = 1.0
PROBE_CONNECT_TIMEOUT = 2
# How long an inference request with an expired (but still usable) cache entry waits for the entry's
# refresh before it goes on with the old one: a database that went away a moment ago, before the breaker
# noticed, must not hold every cached caller for the pool's timeout.
STALE_WAIT_SECONDS = 0.25
# SQLSTATEs that mean "the server cannot serve this connection", not "this query is wrong": connection
# exceptions (08xxx), admin/crash shutdown, still starting up, too many connections.
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")

UNAVAILABLE_CALLS = Counter(
    "torchwire_database_unavailable_total",
    "Work done without the database: calls refused (503) or answered from a stale cache entry", ["outcome"],
)


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": str(math.ceil(PROBE_SECONDS * 2))})
        outage.refused += 1
        UNAVAILABLE_CALLS.labels("refused").inc()


def quiet(response: ResponseT) -> ResponseT:
    """Keeps Django from logging a database-unavailable 503 once per request: the outage is logged once."""
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class CircuitOpen(psycopg.OperationalError):
    """Raised instead of connecting while the database is known to be unreachable."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database cannot be reached, rather than that a query
    was wrong. PoolTimeout counts: with the database up it means the pool is exhausted, and 503 is the
    right answer to that too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable | CircuitOpen | PoolTimeout | PoolClosed | TooManyRequests):
            return True
        if isinstance(current, psycopg.InterfaceError | DjangoInterfaceError):
            return True
        if isinstance(current, psycopg.OperationalError):
            state = current.sqlstate
            return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES
        current = current.__cause__  # what Django's wrapper (and `raise ... from`) wraps; not __context__,
        # which would turn a bug raised while handling an outage into a 503
    return False


def unavailable_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The 503 to answer for ``exc``, or None when it is not the database being unreachable."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    return DatabaseUnavailable() if is_unavailable(exc) else None


class Outage:
    """Whether this process can reach the database. Thread-safe: connections fail and succeed on the
    pool's worker threads, requests ask from the event loop."""

    def __init__(self) -> None:
        self.enabled = False  # serving processes only (the lifespan turns it on): workers just retry
        self.down_since: float | None = None
        self.refused = 0
        self.stale = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.enabled and self.down_since is not None

    def check(self) -> None:
        """Raises CircuitOpen while the database is known to be down (the probe connects on its own)."""
        if self.down:
            raise CircuitOpen("the database is unreachable (retrying in the background)")

    def connect_failed(self, exc: BaseException) -> None:
        if not self.enabled or isinstance(exc, CircuitOpen):
            return
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.refused = self.stale = 0
        logger.warning("database unreachable (%s): inference goes on for the callers and models this process "
                       "has cached, other requests answer 503 until it is back", _first_line(exc))
        threading.Thread(target=self._probe, name="database-probe", daemon=True).start()

    def served_stale(self) -> None:
        self.stale += 1
        UNAVAILABLE_CALLS.labels("stale").inc()

    def _probe(self) -> None:
        """On its own thread while the database is down: connects straight to it (not through the pool,
        whose own retries back off) until that works."""
        while True:
            time.sleep(PROBE_SECONDS)
            try:
                wrapper = connections[DEFAULT_DB_ALIAS]
                params = {**wrapper.get_connection_params(), "connect_timeout": PROBE_CONNECT_TIMEOUT}
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute("SELECT 1")
            except Exception:  # noqa: S112  (any failure: still down, try again)
                continue
            with self._lock:
                since, self.down_since = self.down_since, None
            logger.warning("database reachable again after %.1fs (%d calls answered 503, %d answered from "
                           "stale cache entries)", time.monotonic() - (since or time.monotonic()),
                           self.refused, self.stale)
            return


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


outage = Outage()


async def outage_watch() -> None:
    """Lifespan start (asgi.py): serving processes answer 503 at once while the database is down."""
    outage.enabled = True


def db_async(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``fn`` on an executor thread, handing its connection back to the pool afterwards; raises
    DatabaseUnavailable (at once, while the database is known to be down) when it cannot be reached.

    For the hot serving path and for consumers: Django closes connections at the end of a request,
    but nothing would close one opened on an arbitrary executor thread, and with a pool that would
    pin a pooled connection to an idle thread.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    wrapped = sync_to_async(run, thread_sensitive=False)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if outage.down:
            raise DatabaseUnavailable
        try:
            return await wrapped(*args, **kwargs)
        except Exception as exc:
            if (unavailable := unavailable_error(exc)) is not None and unavailable is not exc:
                raise unavailable from exc
            raise

    return call
