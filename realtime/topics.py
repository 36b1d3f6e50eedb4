"""Which topics exist and who may read them.

A topic is ``<prefix>:<key>`` (``job:42``, ``user:ada``, ``model:resnet``). The app that owns the objects
registers each prefix once, at import time, with two coroutines:

- ``authorize(user, topic) -> bool``: may this user read the topic? Return False alike for an object
  that does not exist and one the user may not see, so that a refusal reveals nothing.
- ``snapshot(topic) -> dict``: the current state, sent with a ``reset`` when a client cannot be given
  the events it missed. It is taken after the reset's position was read, so it reflects at least every
  event up to that seq, perhaps a few later ones too: clients apply events idempotently.

``user:<username>`` is built in: users read their own topic, admins any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.core.errors import ApiError
from realtime.bus import parse_topic

if TYPE_CHECKING:
    from app.accounts.models import User

Authorize = Callable[["User", str], Awaitable[bool]]
Snapshot = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class TopicHandler:
    prefix: str
    authorize: Authorize
    snapshot: Snapshot


class TopicError(Exception):
    """A subscription refused: ``unknown_topic`` (malformed, or no such prefix) or ``forbidden``."""

    def __init__(self, code: Literal["unknown_topic", "forbidden"], topic: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.topic = topic
        self.message = message


_handlers: dict[str, TopicHandler] = {}


def register_topic(prefix: str, *, authorize: Authorize, snapshot: Snapshot) -> None:
    parse_topic(f"{prefix}:x")
    if prefix in _handlers:
        raise ValueError(f"topic prefix {prefix!r} is already registered")
    _handlers[prefix] = TopicHandler(prefix=prefix, authorize=authorize, snapshot=snapshot)


def unregister_topic(prefix: str) -> None:
    _handlers.pop(prefix, None)


def topic_handler(topic: str) -> TopicHandler:
    try:
        prefix, _ = parse_topic(topic)
    except ValueError as exc:
        raise TopicError("unknown_topic", str(topic), str(exc)) from None
    handler = _handlers.get(prefix)
    if handler is None:
        raise TopicError("unknown_topic", topic, f"no topics start with {prefix!r}")
    return handler


async def topic_authorize(*, user: User, topic: str) -> TopicHandler:
    """The topic's handler if ``user`` may read it; TopicError otherwise. A handler that raises a 4xx
    ApiError (NotFound from an ``access_*`` selector, say) refuses too; a 5xx one (`Unavailable`) is
    raised as it is."""
    handler = topic_handler(topic)
    try:
        allowed = user.is_active and await handler.authorize(user, topic)
    except ApiError as exc:
        if exc.status >= 500:  # could not check (the database unreachable): not a refusal
            raise
        allowed = False
    if not allowed:
        raise TopicError("forbidden", topic, "no such topic, or you may not read it")
    return handler


async def topic_snapshot(*, topic: str) -> dict[str, Any]:
    return await topic_handler(topic).snapshot(topic)


async def _user_authorize(user: User, topic: str) -> bool:
    _, username = parse_topic(topic)
    return username == user.username or user.has_role("admin")


async def _user_snapshot(topic: str) -> dict[str, Any]:
    # A user topic carries notifications, not state of its own: after a reset the client refetches
    # what it shows.
    _, username = parse_topic(topic)
    return {"username": username}


register_topic("user", authorize=_user_authorize, snapshot=_user_snapshot)
