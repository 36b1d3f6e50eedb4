"""Running ORM code from async code outside a Django request cycle."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")


def db_async(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``fn`` on an executor thread, handing its connection back to the pool afterwards.

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
        return await wrapped(*args, **kwargs)

    return call
