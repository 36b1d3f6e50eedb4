"""Live serving figures per model, one point a second, summed over every serving process.

Each serving process counts, per model, what its requests and batchers did during the current second
(`request` from `runtime.infer`, the rest through `StatsObserver`, both on the event loop: a few dict
operations). A reporter task wakes just after every wall-clock second and, for each model that had
traffic, writes this process's part of the second that ended into a Redis hash (one field per process).
One second later every process has written its part of that second, so any process that took part
claims it (``SET NX``); the winner sums the parts into one point, keeps it in the model's series (a
sorted set, `RETENTION_SECONDS` deep) and publishes it as ``serving.stats`` on ``serving:<model>``.
So a point reaches subscribers about two seconds after its second, once, whichever processes served it;
a second without traffic has no point.

Latencies are kept as counts in log-spaced buckets (ratio `_RATIO`), so the processes' parts merge
exactly and p50/p99 are read from the sum, within half a bucket (about 9 %).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from app.accounts.models import User
from app.core.db import db_async
from app.core.redis import get_redis
from app.monitoring import recording
from app.monitoring.metrics import PrometheusBatchObserver
from app.registry.selectors import model_get
from realtime.bus import parse_topic, publish

logger = logging.getLogger(__name__)

RETENTION_SECONDS = 3600
PART_TTL_SECONDS = 30
TICK_OFFSET_SECONDS = 0.05
_RATIO = 2 ** 0.25
_LOG_RATIO = math.log(_RATIO)
_FLOOR_MS = 0.01


def _bucket(ms: float) -> int:
    return max(0, math.ceil(math.log(max(ms, _FLOOR_MS) / _FLOOR_MS) / _LOG_RATIO))


def _bucket_ms(index: int) -> float:
    """A bucket's representative latency: the geometric middle of its bounds."""
    return _FLOOR_MS * _RATIO ** (index - 0.5) if index else _FLOOR_MS


@dataclass
class _Part:
    """One process's figures for one model over one second. Plain JSON once written."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: dict[int, int] = field(default_factory=dict)
    batches: int = 0
    batch_rows: int = 0
    busy_s: float = 0.0
    queue_peak: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    effective_max_batch_size: int | None = None

    def active(self) -> bool:
        return bool(self.requests or self.batches or self.rejected or self.queue_peak)

    def to_json(self) -> str:
        return json.dumps({
            "requests": self.requests, "errors": self.errors, "latency": self.latency, "batches": self.batches,
            "batch_rows": self.batch_rows, "busy_s": round(self.busy_s, 6), "queue_peak": self.queue_peak,
            "rejected": self.rejected, "effective_max_batch_size": self.effective_max_batch_size,
        }, separators=(",", ":"))


_parts: dict[str, _Part] = {}
_queues: dict[tuple[str, int], int] = {}  # rows waiting now, per (model, version)
_reported: set[str] = set()  # models this process wrote a part for in the previous second
_task: asyncio.Task[None] | None = None
_failing = False


def _part(model: str) -> _Part:
    part = _parts.get(model)
    if part is None:
        part = _parts[model] = _Part()
        _ensure_reporter()
    return part


def request(*, model: str, seconds: float, status: str) -> None:
    """One inference call's outcome (on the event loop)."""
    part = _part(model)
    part.requests += 1
    if status == "ok":
        index = _bucket(seconds * 1000)
        part.latency[index] = part.latency.get(index, 0) + 1
    else:
        part.errors[status] = part.errors.get(status, 0) + 1


class StatsObserver(PrometheusBatchObserver):
    """A batcher's hooks feeding both the Prometheus metrics and this module's per-second parts."""

    def __init__(self, model: str, version: int) -> None:
        super().__init__(model, version)
        self._name = model
        self._key = (model, version)

    def queue_depth(self, rows: int) -> None:
        super().queue_depth(rows)
        _queues[self._key] = rows
        total = sum(v for (m, _), v in _queues.items() if m == self._name)
        part = _part(self._name)
        part.queue_peak = max(part.queue_peak, total)

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        super().batch(rows, requests, compute_seconds)
        part = _part(self._name)
        part.batches += 1
        part.batch_rows += rows
        part.busy_s += compute_seconds

    def rejected(self, reason: str) -> None:
        super().rejected(reason)
        part = _part(self._name)
        part.rejected[reason] = part.rejected.get(reason, 0) + 1

    def tuning(self, max_batch_size: int, max_delay_seconds: float, p99_seconds: float | None) -> None:
        super().tuning(max_batch_size, max_delay_seconds, p99_seconds)
        _part(self._name).effective_max_batch_size = max_batch_size


def _quantile(latency: Mapping[int, int], q: float) -> float | None:
    total = sum(latency.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(latency):
        seen += latency[index]
        if seen >= rank:
            return round(_bucket_ms(index), 3)
    return round(_bucket_ms(max(latency)), 3)


def merge(second: int, parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The point of one second from every process's part (`_Part.to_json` decoded)."""
    latency: dict[int, int] = {}
    errors: dict[str, int] = {}
    rejected: dict[str, int] = {}
    requests = batches = rows = queue = 0
    busy = 0.0
    effective: list[int] = []
    for part in parts:
        requests += int(part.get("requests", 0))
        batches += int(part.get("batches", 0))
        rows += int(part.get("batch_rows", 0))
        busy += float(part.get("busy_s", 0.0))
        queue += int(part.get("queue_peak", 0))
        for key, count in dict(part.get("latency") or {}).items():
            latency[int(key)] = latency.get(int(key), 0) + int(count)
        for target, source in ((errors, part.get("errors")), (rejected, part.get("rejected"))):
            for key, count in dict(source or {}).items():
                target[str(key)] = target.get(str(key), 0) + int(count)
        if part.get("effective_max_batch_size") is not None:
            effective.append(int(part["effective_max_batch_size"]))
    processes = max(len(parts), 1)
    return {
        "t": second,
        "processes": len(parts),
        "requests_per_s": requests,
        "p50_ms": _quantile(latency, 0.5),
        "p99_ms": _quantile(latency, 0.99),
        "queue_depth": queue,
        "batches_per_s": batches,
        "rows_per_s": rows,
        "mean_batch_size": round(rows / batches, 2) if batches else None,
        "busy_share": round(min(busy / processes, 1.0), 4),
        "effective_max_batch_size": max(effective) if effective else None,
        "errors": errors,
        "rejections": rejected,
    }


def _part_key(model: str, second: int) -> str:
    return "tw:servestats:{" + model + "}:" + str(second)


def _series_key(model: str) -> str:
    return "tw:servestats:{" + model + "}:series"


def topic(model: str) -> str:
    return f"serving:{model}"


async def _report(second: int) -> None:
    """Writes this process's parts of ``second``, then sums ``second - 1`` for the models it served then."""
    parts = {model: part for model, part in _parts.items() if part.active()}
    _parts.clear()
    redis = get_redis()
    process = recording.source()
    if parts:
        pipe = redis.pipeline(transaction=False)
        for model, part in parts.items():
            pipe.hset(_part_key(model, second), process, part.to_json())
            pipe.expire(_part_key(model, second), PART_TTL_SECONDS)
        await pipe.execute()
    previous, _reported_now = set(_reported), set(parts)
    _reported.clear()
    _reported.update(_reported_now)
    for model in previous:
        claim = _part_key(model, second - 1) + ":claim"
        if not await redis.set(claim, process, nx=True, ex=PART_TTL_SECONDS):
            continue
        raw = await redis.hgetall(_part_key(model, second - 1))
        point = merge(second - 1, [json.loads(v) for v in raw.values()])
        series = _series_key(model)
        pipe = redis.pipeline(transaction=False)
        pipe.zadd(series, {json.dumps(point, separators=(",", ":")): second - 1})
        pipe.zremrangebyscore(series, "-inf", second - 1 - RETENTION_SECONDS)
        pipe.expire(series, RETENTION_SECONDS)
        await pipe.execute()
        await _publish(model, point)


async def _publish(model: str, point: dict[str, Any]) -> None:
    await publish(topic(model), "serving.stats", {"model": model, **point})


async def _run() -> None:
    global _failing
    while True:
        now = time.time()
        await asyncio.sleep(math.floor(now) + 1 + TICK_OFFSET_SECONDS - now)
        try:
            await _report(int(time.time()) - 1)
        except asyncio.CancelledError:
            raise
        except Exception:
            if not _failing:
                logger.warning("live serving statistics could not be reported; retrying every second",
                               exc_info=True)
            _failing = True
        else:
            if _failing:
                logger.info("live serving statistics are reported again")
            _failing = False


def _ensure_reporter() -> None:
    global _task
    if _task is not None and not _task.done():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # a batcher driven outside a loop (never in a serving process)
    _task = loop.create_task(_run(), name="serving-livestats")


async def stop() -> None:
    global _task
    if _task is not None:
        _task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _task
        _task = None


async def series(*, model: str, seconds: int) -> list[dict[str, Any]]:
    """The points of the last ``seconds`` seconds, oldest first (seconds without traffic have none)."""
    since = int(time.time()) - seconds
    raw = await get_redis().zrangebyscore(_series_key(model), since, "+inf")
    return [json.loads(cast(bytes, item)) for item in raw]


SNAPSHOT_SECONDS = 300


def _readable(user: User, topic: str) -> bool:
    model_get(user=user, name=parse_topic(topic)[1])
    return True


async def topic_authorize(user: User, topic: str) -> bool:
    """``serving:<model>`` is readable exactly when the model is."""
    return await db_async(_readable)(user, topic)


async def topic_snapshot(topic: str) -> dict[str, Any]:
    model = parse_topic(topic)[1]
    return {"model": model, "points": await series(model=model, seconds=SNAPSHOT_SECONDS)}

