"""Structured logging with the request id of the request (or Celery task) being served."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

import redis

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def clean_request_id(value: str | None) -> str:
    """An incoming X-Request-ID is kept when it is short and plain, so proxies can correlate; else a new one."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class RedisOutageFilter(logging.Filter):
    """For ``channels_redis.pubsub``: while Redis is unreachable its receive loop logs a full traceback
    every second (and one per channel it fails to unsubscribe). One line a minute says the same; the
    layer reconnects and resubscribes by itself when Redis is back."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError | asyncio.CancelledError):
            return True
        now = time.monotonic()
        if isinstance(exc, asyncio.CancelledError) or now - self._last < self.INTERVAL:
            return False
        self._last = now
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "channel layer: Redis unreachable (%s: %s); retrying every second"
        record.args = (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        record.exc_info, record.exc_text = None, None
        return True
