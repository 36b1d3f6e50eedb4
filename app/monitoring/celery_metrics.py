"""Celery task metrics, kept in Redis so that /metrics sees every worker, on this host or another.

Worker side: `install` connects signal handlers that count each task by name and final state, put its
duration into histogram buckets and count its retries. Counts accumulate in the process that ran the
task and go to Redis in one pipeline when the task ends; a failed write is kept for the next flush and
logged, never raised into the task. Events the worker publishes (job progress) are counted the same way,
because a worker's own prometheus-client registry is never scraped.

Scrape side: `task_metrics` renders those hashes, `queue_metrics` the length of each Celery queue in the broker.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

TASKS_KEY = "tw:metrics:celery:tasks"  # "<task>\x1f<state>" -> count
RETRIES_KEY = "tw:metrics:celery:retries"  # "<task>" -> count
DURATION_KEY = "tw:metrics:celery:duration"  # "<task>\x1f<bucket index>|sum|count" -> count (buckets not cumulative)
EVENTS_KEY = "tw:metrics:events:published"  # "<topic prefix>" -> count
SEP = "\x1f"

# From a health ping to a long training run.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
                    4 * 3600.0, math.inf)
# Kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_FLUSH_EVERY = 5.0


class _WorkerState:
    def __init__(self) -> None:
        self.in_worker = False
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        self.sums: dict[tuple[str, str], float] = {}
        self.started: dict[str, float] = {}
        self.flushed_at = 0.0
        self.client: redis.Redis | None = None
        self.client_pid = 0


_state = _WorkerState()


def in_worker() -> bool:
    """True in a Celery worker (main process and pool children) once `install` has seen it start."""
    return _state.in_worker


def _client() -> redis.Redis:
    # A pool child must not reuse its parent's sockets.
    if _state.client is None or _state.client_pid != os.getpid():
        from django.conf import settings

        _state.client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _state.client_pid = os.getpid()
    return _state.client


def _add(key: str, field: str, n: int = 1) -> None:
    with _state.lock:
        _state.counts[(key, field)] = _state.counts.get((key, field), 0) + n


def _add_float(key: str, field: str, value: float) -> None:
    with _state.lock:
        _state.sums[(key, field)] = _state.sums.get((key, field), 0.0) + value


def flush() -> None:
    """Writes what this process counted since the last flush; on failure keeps it for the next one."""
    with _state.lock:
        counts, sums = _state.counts, _state.sums
        _state.counts, _state.sums = {}, {}
        _state.flushed_at = time.monotonic()
    if not counts and not sums:
        return
    try:
        pipe = _client().pipeline(transaction=False)
        for (key, field), n in counts.items():
            pipe.hincrby(key, field, n)
        for (key, field), value in sums.items():
            pipe.hincrbyfloat(key, field, value)
        pipe.execute()
    except Exception as exc:
        logger.warning("could not write task metrics to Redis (kept for the next flush): %r", exc)
        with _state.lock:
            for item, n in counts.items():
                _state.counts[item] = _state.counts.get(item, 0) + n
            for item, value in sums.items():
                _state.sums[item] = _state.sums.get(item, 0.0) + value


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(DURATION_BUCKETS):
        if seconds <= bound:
            return index
    return len(DURATION_BUCKETS) - 1


def task_finished(task: str, state: str, seconds: float | None) -> None:
    """Counts one task that ended in ``state``; ``seconds`` None when its run was not timed here."""
    _add(TASKS_KEY, f"{task}{SEP}{state.lower()}")
    if seconds is not None:
        _add(DURATION_KEY, f"{task}{SEP}{_bucket(seconds)}")
        _add(DURATION_KEY, f"{task}{SEP}count")
        _add_float(DURATION_KEY, f"{task}{SEP}sum", seconds)


def event_published(prefix: str) -> None:
    """Counts an event a worker published; written with the task's metrics, or every few seconds."""
    _add(EVENTS_KEY, prefix)
    if time.monotonic() - _state.flushed_at > _FLUSH_EVERY:
        flush()


# Signal handlers. prerun, retry, failure and postrun run in the process that runs the task (a pool
# child under prefork); revoked, and failure after a lost child or a hard time limit, in the main process.

def _worker_started(**_: Any) -> None:
    _state.in_worker = True


def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _state.started[task_id] = time.monotonic()


def _retry(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        _add(RETRIES_KEY, str(sender.name))


def _failure(task_id: str | None = None, sender: Any = None, **_: Any) -> None:
    # In the task's own process postrun follows and counts it; here only failures it will never see.
    if sender is not None and task_id not in _state.started:
        task_finished(str(sender.name), "failure", None)
        flush()


def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _state.started.pop(task_id or "", None)
    if task is not None:
        task_finished(str(task.name), state or "unknown", None if started is None else time.monotonic() - started)
    flush()


def _revoked(request: Any = None, sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or getattr(request, "task", None) or getattr(request, "name", None)
    if name:
        task_finished(str(name), "revoked", None)
        flush()


def install() -> None:
    """Connects the handlers; call once where the worker's Celery app is defined (workers/celery.py)."""
    from celery import signals

    signals.worker_init.connect(_worker_started, weak=False)
    signals.worker_process_init.connect(_worker_started, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_retry.connect(_retry, weak=False)
    signals.task_failure.connect(_failure, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.task_revoked.connect(_revoked, weak=False)


# Scrape side: runs in the ASGI process answering /metrics, off the event loop.

def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read(client: redis.Redis) -> tuple[dict[str, str], ...]:
    pipe = client.pipeline(transaction=False)
    for key in (TASKS_KEY, RETRIES_KEY, DURATION_KEY, EVENTS_KEY):
        pipe.hgetall(key)
    replies = pipe.execute()
    return tuple({_text(k): _text(v) for k, v in reply.items()} for reply in replies)


def task_families(client: redis.Redis) -> Iterator[Metric]:
    tasks, retries, durations, events = _read(client)
    total = CounterMetricFamily("torchwire_celery_tasks", "Celery tasks that ended, by task name and final state",
                                labels=["task", "state"])
    for field, value in sorted(tasks.items()):
        name, _, state = field.partition(SEP)
        total.add_metric([name, state], float(value))
    yield total
    retried = CounterMetricFamily("torchwire_celery_task_retries", "Celery task retries", labels=["task"])
    for name, value in sorted(retries.items()):
        retried.add_metric([name], float(value))
    yield retried
    yield _duration_family(durations)
    published = CounterMetricFamily("torchwire_events_published", "Events appended to a topic's log",
                                    labels=["topic_prefix"])
    for prefix, value in sorted(events.items()):
        published.add_metric([prefix], float(value))
    yield published


def _duration_family(fields: dict[str, str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("torchwire_celery_task_duration_seconds",
                                   "Run time of Celery tasks (prerun to postrun)", labels=["task"])
    per_task: dict[str, dict[str, str]] = {}
    for field, value in fields.items():
        name, _, part = field.partition(SEP)
        per_task.setdefault(name, {})[part] = value
    for name, parts in sorted(per_task.items()):
        cumulative, buckets = 0.0, []
        for index, bound in enumerate(DURATION_BUCKETS):
            cumulative += float(parts.get(str(index), 0))
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric([name], buckets, float(parts.get("sum", 0.0)))
    return family


def queue_names() -> list[str]:
    from django.conf import settings

    names = [settings.CELERY_TASK_DEFAULT_QUEUE]
    extra: Iterable[Any] = getattr(settings, "CELERY_TASK_QUEUES", None) or ()
    for queue in extra:
        name = getattr(queue, "name", queue)
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def queue_families(broker: redis.Redis, queues: list[str]) -> Iterator[Metric]:
    pipe = broker.pipeline(transaction=False)
    for queue in queues:
        for suffix in _PRIORITY_SUFFIXES:
            pipe.llen(queue + suffix)
    pipe.hlen("unacked")
    lengths = pipe.execute()
    family = GaugeMetricFamily("torchwire_celery_queue_length", "Messages waiting in a Celery queue",
                               labels=["queue"])
    step = len(_PRIORITY_SUFFIXES)
    for i, queue in enumerate(queues):
        family.add_metric([queue], float(sum(lengths[i * step:(i + 1) * step])))
    yield family
    yield GaugeMetricFamily("torchwire_celery_unacked_messages",
                            "Messages delivered to a worker and not yet acknowledged (running or reserved)",
                            value=float(lengths[-1]))


_clients: dict[tuple[int, str], redis.Redis] = {}


def scrape_client(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return client


def task_metrics() -> list[Metric]:
    """Task counters and durations, and events published by workers, from Redis."""
    from django.conf import settings

    return list(task_families(scrape_client(settings.REDIS_URL)))


def queue_metrics() -> list[Metric]:
    """Queue lengths from the broker; nothing when the broker is not Redis."""
    from django.conf import settings

    broker = settings.CELERY_BROKER_URL
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        return []
    return list(queue_families(scrape_client(broker), queue_names()))
