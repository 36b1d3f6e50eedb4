"""Helpers of the service-level tests (``tests/<app>/test_services.py``): they call services and
selectors in the test's own transaction (pytest-django's ``db``, rolled back afterwards), against the
suite's PostgreSQL and Redis, and start no process. Side effects queued with ``transaction.on_commit``
run only inside ``django_capture_on_commit_callbacks(execute=True)``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from app.accounts.models import Role, User
from app.accounts.services import user_create
from app.events import relay
from app.events.models import OutboxEvent
from realtime import bus


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same Redis) uses: topics outlive rollbacks."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_user(role: Role | str = Role.MEMBER, *, username: str | None = None, password: str = "pw") -> User:
    return user_create(username=username or unique(str(role)), password=password, role=role)


def written_events(topic: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the events written to the outbox for ``topic``, oldest first."""
    rows = OutboxEvent.objects.filter(topic=topic).order_by("id")
    return [(row.type, json.loads(row.data)) for row in rows]


def published_events(topic: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the events in the bus's Redis log of ``topic``, oldest first."""
    events = async_to_sync(bus.replay)(topic, 0)
    assert events is not None, f"the log of {topic} lost events"
    return [(event.type, event.data) for event in events]


@pytest.fixture
def fresh_relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An on-commit kick publishes at once, whatever backoff an earlier test left in this process."""
    monkeypatch.setattr(relay, "_backoff", relay.Backoff(60.0, 60.0))
    yield
