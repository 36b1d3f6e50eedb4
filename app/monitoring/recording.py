"""Recording predictions and request outcomes, off the request path.

REST, V2 and the websocket wrap each inference call in `observe`, on the event loop. There it costs a
uuid, a clock read, a random draw against the model's sample rate and a list append: inputs and
outputs are kept by reference, and turned into rows (JSON-safe, capped) only when written. A flusher
task on the same loop writes every PREDICTION_FLUSH_SECONDS, or sooner once FLUSH_ROWS wait, in one
executor call to `services.monitoring_batch_write`.

A request is recorded (all its rows) when it passes the model's sample rate draw and fits the model's
row budget: a token bucket per model and process of PREDICTION_MAX_ROWS_PER_SECOND rows a second, one
second's worth deep (0: no budget). So recording is complete at low traffic and bounded under load,
where writing every row would cost more than serving it; drift checks and the prediction summaries
need a sample, not every row. A request larger than the bucket is recorded when the bucket is full and
leaves it in debt, so the long-run rate still holds.

At most PREDICTION_BUFFER_ROWS sampled rows wait in memory; a request over the budget, one that would
overflow the buffer, or one whose write fails, is not recorded and is counted in
``torchwire_prediction_rows_dropped_total`` (reason ``budget``, ``buffer_full``, ``write_failed``).
While the database is unreachable the rows stay in the buffer for the next flush (so a short outage
loses none, and a long one fills the buffer and drops with ``buffer_full``); what is still waiting when
the process stops is counted as ``database_unavailable``.
Budget drops are summed in the bucket and added to the counter by the flusher, so the request path
takes no lock. The answer never waits for the database.

Request outcomes (count, errors by code, latency histogram) are not sampled: they are aggregated per
minute in memory and written as absolute values to this process's `RequestStats` rows.

Sample rates come from `MonitoringConfig`, refreshed by the flusher (a model seen for the first time
is looked up at the next flush, and uses the default until then), so no request waits on a query.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from prometheus_client import Counter

from app.core import invalidation
from app.core.db import DatabaseUnavailable, db_async
from app.core.errors import STATUS_CODES

from . import selectors
from .models import LATENCY_EDGES_MS
from .rows import Pending, _write

if TYPE_CHECKING:
    from app.serving.runtime import Target

logger = logging.getLogger(__name__)

FLUSH_ROWS = 2000
CONFIG_REFRESH_SECONDS = 5.0
# Minute aggregates the database keeps refusing are given up after this many minutes.
STATS_RETRY_MINUTES = 10

ROWS_DROPPED = Counter(
    "torchwire_prediction_rows_dropped_total", "Sampled prediction rows not recorded", ["model", "reason"]
)


def source() -> str:
    """Names this serving process in `RequestStats` (one writer per row)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]




@dataclass(slots=True)
class _Minute:
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))
    changes: int = 0
    written: int = 0


_MinuteKey = tuple[int, int, str, int]  # model id, version, protocol, minute (epoch seconds // 60)


@dataclass(slots=True)
class _Bucket:
    """A model's row budget: tokens (rows; below zero after a request larger than the bucket) at ``at``
    (time.monotonic), and rows refused since the flusher last reported them."""

    model: str
    tokens: float
    at: float
    dropped: int = 0


class Recorder:
    """This process's buffer. Every method except `rate_changed` runs on the serving event loop."""

    def __init__(self) -> None:
        self._pending: list[Pending] = []
        self._pending_rows = 0
        self._minutes: dict[_MinuteKey, _Minute] = {}
        self._rates: dict[int, float] = {}
        self._seen: set[int] = set()
        self._buckets: dict[int, _Bucket] = {}
        self._refresh_due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # --- request path -------------------------------------------------------------------------

    def sampled(self, model_id: int, model: str, rows: int) -> bool:
        """Whether to record a request of ``rows`` rows: it passes the sample rate draw, then the budget."""
        if model_id not in self._seen:
            self._seen.add(model_id)
            self._refresh_due = 0.0
        rate = self._rates.get(model_id, settings.PREDICTION_SAMPLE_RATE)
        if not (rate >= 1.0 or (rate > 0.0 and random.random() < rate)):
            return False
        budget = settings.PREDICTION_MAX_ROWS_PER_SECOND
        if budget <= 0:
            return True
        now = time.monotonic()
        bucket = self._buckets.get(model_id)
        if bucket is None:
            bucket = self._buckets[model_id] = _Bucket(model, budget, now)
        else:
            bucket.tokens = min(budget, bucket.tokens + (now - bucket.at) * budget)
            bucket.at = now
        if bucket.tokens < min(rows, budget):
            bucket.dropped += rows
            return False
        bucket.tokens -= rows
        return True

    def request(self, *, model_id: int, version: int, protocol: str, status: str, latency_ms: float,
                rows: int) -> None:
        key = (model_id, version, protocol, int(time.time() // 60))
        minute = self._minutes.get(key)
        if minute is None:
            minute = self._minutes[key] = _Minute()
        minute.requests += 1
        minute.rows += rows
        minute.latency_sum += latency_ms
        minute.latency_max = max(minute.latency_max, latency_ms)
        minute.buckets[bisect.bisect_left(LATENCY_EDGES_MS, latency_ms)] += 1
        if status != "ok":
            minute.errors += 1
            minute.statuses[status] = minute.statuses.get(status, 0) + 1
        minute.changes += 1
        self._ensure_running()

    def add(self, item: Pending) -> None:
        if self._pending_rows + item.rows > settings.PREDICTION_BUFFER_ROWS:
            ROWS_DROPPED.labels(item.model, "buffer_full").inc(item.rows)
            return
        self._pending.append(item)
        self._pending_rows += item.rows
        self._ensure_running()
        if self._pending_rows >= FLUSH_ROWS:
            self._wake.set()

    def rate_changed(self, model_id: int, rate: float | None) -> None:
        """The process that changed a model's config applies it at once; callable from any thread."""
        if rate is None:
            self._rates.pop(model_id, None)
        else:
            self._rates[model_id] = rate

    # --- flushing -------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # asyncio primitives belong to the loop that first waits on them.
            self._loop, self._lock, self._wake, self._task = loop, asyncio.Lock(), asyncio.Event(), None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="monitoring-recorder")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), settings.PREDICTION_FLUSH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._flush()
                if self._seen and time.monotonic() >= self._refresh_due:
                    await self._refresh_rates()
            except DatabaseUnavailable:
                pass  # logged once per outage (app.core.db); rows wait in the buffer
            except Exception:
                logger.exception("monitoring: flushing recorded predictions failed")

    async def _refresh_rates(self) -> None:
        self._refresh_due = time.monotonic() + CONFIG_REFRESH_SECONDS
        ids = sorted(self._seen)
        rates = await db_async(selectors.sample_rates)(model_ids=ids)
        for model_id in ids:
            self.rate_changed(model_id, rates.get(model_id))

    async def flush(self) -> None:
        """Writes everything this process recorded before the call. Await it on the serving loop before
        reading recorded rows (feedback, checks), so a client reads what it just predicted."""
        self._ensure_running()
        await self._flush()

    def _report_dropped(self) -> None:
        for bucket in self._buckets.values():
            if bucket.dropped:
                dropped, bucket.dropped = bucket.dropped, 0
                ROWS_DROPPED.labels(bucket.model, "budget").inc(dropped)

    async def _flush(self) -> None:
        self._report_dropped()
        async with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
            dirty = [(key, m.changes, _stats_row(key, m)) for key, m in self._minutes.items() if m.changes != m.written]
            if pending or dirty:
                try:
                    await db_async(_write)(pending, [row for _, _, row in dirty], source())
                except DatabaseUnavailable:
                    # Kept for the next flush, ahead of what arrived meanwhile; `add` bounds the buffer.
                    self._pending[:0] = pending
                    self._pending_rows += sum(p.rows for p in pending)
                    dirty = []
                except Exception:
                    logger.exception("monitoring: could not write %d prediction rows", sum(p.rows for p in pending))
                    for item in pending:
                        ROWS_DROPPED.labels(item.model, "write_failed").inc(item.rows)
                    dirty = []
                for key, changes, _ in dirty:
                    minute = self._minutes.get(key)
                    if minute is not None:
                        minute.written = max(minute.written, changes)
            self._prune()

    def _prune(self) -> None:
        now = int(time.time() // 60)
        for key in [k for k, m in self._minutes.items()
                    if (k[3] < now - 1 and m.changes == m.written) or k[3] < now - STATS_RETRY_MINUTES]:
            del self._minutes[key]

    async def close(self) -> None:
        """Stops the flusher and writes what is left. Lifespan stop (asgi.py): after the serving pool drained,
        so requests that finished while it drained are written too."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if self._loop is not asyncio.get_running_loop():
            return
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()
        for item in self._pending:  # the database is unreachable: nothing more to wait for
            ROWS_DROPPED.labels(item.model, "database_unavailable").inc(item.rows)
        self._pending, self._pending_rows = [], 0


recorder = Recorder()
invalidation.on_change(invalidation.SAMPLING, lambda key: recorder.rate_changed(*key))  # type: ignore[misc]


class Observation:
    """One inference request between `runtime.resolve` and its answer; use it as a context manager
    around the call, then report the outcome with `records` or `tensors`. An exception leaving the
    block is counted as an error (its code). Runs on the event loop."""

    __slots__ = ("_done", "_protocol", "_started", "_target", "prediction_id")

    def __init__(self, target: Target, protocol: str, started: float | None) -> None:
        self.prediction_id = _prediction_id()
        self._target = target
        self._protocol = protocol
        self._started = time.perf_counter() if started is None else started
        self._done = False

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not self._done:
            self._done = True
            try:
                recorder.request(model_id=self._target.model.id, version=self._target.version,
                                 protocol=self._protocol, status=_status(exc), latency_ms=self._elapsed_ms(), rows=0)
            except Exception:
                logger.exception("monitoring: could not count a failed request")

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0

    def _finish(self, version: int, rows: int, **data: Any) -> None:
        """Never raises: a monitoring fault must not turn an answered prediction into an error."""
        try:
            self._record(version, rows, **data)
        except Exception:
            logger.exception("monitoring: could not record a prediction of %s", self._target.model.name)

    def _record(self, version: int, rows: int, **data: Any) -> None:
        latency = self._elapsed_ms()
        self._done = True
        target = self._target
        recorder.request(model_id=target.model.id, version=version, protocol=self._protocol, status="ok",
                         latency_ms=latency, rows=rows)
        if recorder.sampled(target.model.id, target.model.name, rows):
            labels = target.extras.get("labels")
            recorder.add(Pending(
                model_id=target.model.id, model=target.model.name, version=version, protocol=self._protocol,
                prediction_id=self.prediction_id, at=time.time(), latency_ms=latency, rows=rows,
                task=str(target.extras.get("task") or ""), labels=list(labels) if isinstance(labels, list) else [],
                **data,
            ))

    def records(self, version: int, records: Sequence[Mapping[str, Any]], answers: Sequence[Mapping[str, Any]]) -> None:
        """A raw-records prediction answered by ``version``."""
        self._finish(version, len(records), records=records, answers=answers)

    def tensors(self, version: int, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """A tensor prediction answered by ``version``; row ``i`` is index ``i`` of the first dimension."""
        first = next(iter(inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim >= 1 else 1
        output_name = self._target.signature.outputs[0].name if self._target.signature.outputs else None
        self._finish(version, rows, inputs=inputs, outputs=outputs, output_name=output_name)


_ids: list[str] = []


def _prediction_id() -> str:
    """A random (version 4) UUID, as `uuid.uuid4` makes, with the OS's randomness read 256 at a time:
    one system call per request was a visible part of the request path."""
    if not _ids:
        raw = os.urandom(16 * 256)
        _ids.extend(str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, len(raw), 16))
    return _ids.pop()


def observe(target: Target, *, protocol: str, started: float | None = None) -> Observation:
    """Starts observing a call; ``started`` (a `time.perf_counter` value) defaults to now."""
    return Observation(target, protocol, started)


def with_prediction_id(body: bytes, json_length: int | None, prediction_id: str) -> tuple[bytes, int | None]:
    """Adds ``parameters.prediction_id`` to a body from `inference.v2.encode_infer_response`, whose JSON
    part is always an object that carries no response parameters of its own."""
    if body[:1] != b"{":
        raise ValueError("not a V2 infer response")
    prefix = b'{"parameters":{"prediction_id":"' + prediction_id.encode() + b'"},'
    return prefix + body[1:], None if json_length is None else json_length + len(prefix) - 1


def _status(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code[:32]
    status = getattr(exc, "status", None)
    return STATUS_CODES.get(status, "error") if isinstance(status, int) else "error"


def _stats_row(key: _MinuteKey, minute: _Minute) -> dict[str, Any]:
    model_id, version, protocol, at = key
    return {
        "model_id": model_id, "version": version, "protocol": protocol,
        "minute": datetime.fromtimestamp(at * 60, tz=UTC), "requests": minute.requests, "errors": minute.errors,
        "rows": minute.rows, "statuses": dict(minute.statuses), "latency_sum_ms": minute.latency_sum,
        "latency_max_ms": minute.latency_max, "latency_buckets": list(minute.buckets),
    }
