"""Prometheus metrics: serving, HTTP, websockets, events, the database pool, Celery tasks and queues.

prometheus-client multiprocess mode is used when PROMETHEUS_MULTIPROC_DIR is set (several uvicorn
workers), so /metrics aggregates across them; the directory must exist, be shared by the workers of one
host, and be emptied before they start. Celery workers report through Redis (celery_metrics.py), so
their numbers reach /metrics wherever they run. docs/monitoring.md lists every metric.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.jobs.models import Job, JobKind, JobState
from app.monitoring import celery_metrics
from inference.batcher import BatchObserver
from realtime import bus

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

INFERENCE_REQUESTS = Counter(
    "torchwire_inference_requests_total", "Inference requests", ["model", "version", "protocol", "status"]
)
INFERENCE_LATENCY = Histogram(
    "torchwire_inference_latency_seconds", "End-to-end inference latency inside the server",
    ["model", "protocol"], buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "torchwire_batch_queue_wait_seconds", "Time a request waited before its rows entered a batch",
    ["model", "version"], buckets=LATENCY_BUCKETS,
)
COMPUTE_TIME = Histogram(
    "torchwire_batch_compute_seconds", "Forward-pass time per batch", ["model", "version"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "torchwire_batch_size_rows", "Rows per forward pass", ["model", "version"], buckets=BATCH_BUCKETS
)
QUEUE_DEPTH = Gauge(
    "torchwire_batch_queue_rows", "Rows waiting for a batch", ["model", "version"], multiprocess_mode="livesum"
)
BATCH_EFFECTIVE_ROWS = Gauge(
    "torchwire_batch_effective_max_rows", "Max rows per forward pass in force (tuned under a p99 target)",
    ["model", "version"], multiprocess_mode="livemax",
)
BATCH_EFFECTIVE_DELAY = Gauge(
    "torchwire_batch_effective_max_delay_seconds", "Longest wait for company in force (tuned under a p99 target)",
    ["model", "version"], multiprocess_mode="livemax",
)
BATCH_LATENCY_P99 = Gauge(
    "torchwire_batch_latency_p99_seconds", "p99 of submit-to-result in the batcher's last measuring window",
    ["model", "version"], multiprocess_mode="livemax",
)
REJECTED = Counter("torchwire_inference_rejected_total", "Refused inference requests", ["model", "reason"])
LOADED_MODELS = Gauge("torchwire_loaded_models", "Model versions loaded in memory", multiprocess_mode="livesum")
LOADED_MEMORY = Gauge(
    "torchwire_loaded_model_bytes", "Parameter and buffer bytes of a loaded model version", ["model", "version"],
    multiprocess_mode="livesum",
)


class PrometheusBatchObserver(BatchObserver):
    """Feeds one batcher's statistics into the metrics above. Called on the event loop; cheap."""

    def __init__(self, model: str, version: int) -> None:
        labels = {"model": model, "version": str(version)}
        self._model = model
        self._depth = QUEUE_DEPTH.labels(**labels)
        self._wait = QUEUE_WAIT.labels(**labels)
        self._compute = COMPUTE_TIME.labels(**labels)
        self._size = BATCH_SIZE.labels(**labels)
        self._effective_rows = BATCH_EFFECTIVE_ROWS.labels(**labels)
        self._effective_delay = BATCH_EFFECTIVE_DELAY.labels(**labels)
        self._p99 = BATCH_LATENCY_P99.labels(**labels)

    def queue_depth(self, rows: int) -> None:
        self._depth.set(rows)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        self._size.observe(rows)
        self._compute.observe(compute_seconds)

    def rejected(self, reason: str) -> None:
        REJECTED.labels(model=self._model, reason=reason).inc()

    def tuning(self, max_batch_size: int, max_delay_seconds: float, p99_seconds: float | None) -> None:
        self._effective_rows.set(max_batch_size)
        self._effective_delay.set(max_delay_seconds)
        if p99_seconds is not None:
            self._p99.set(p99_seconds)


HTTP_REQUESTS = Counter(
    "torchwire_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "torchwire_http_request_duration_seconds", "Time from request to response headers, by route template",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("torchwire_http_requests_in_flight", "HTTP requests being handled", multiprocess_mode="livesum")

WEBSOCKETS_OPEN = Gauge("torchwire_websockets_open", "Open websocket connections", ["consumer"],
                        multiprocess_mode="livesum")
WEBSOCKETS_ACCEPTED = Counter("torchwire_websockets_accepted_total", "Websocket connections accepted", ["consumer"])

EVENTS_PUBLISHED = Counter("torchwire_events_published_total", "Events appended to a topic's log", ["topic_prefix"])
EVENTS_DELIVERED = Counter("torchwire_events_delivered_total", "Events sent to subscribers, live or replayed",
                           ["transport"])
EVENTS_REPLAYED = Counter("torchwire_events_replayed_total", "Events sent from the replay log (resume or catch-up)",
                          ["transport"])
EVENTS_DROPPED = Counter("torchwire_events_dropped_total", "Queued messages discarded before reaching a subscriber",
                         ["reason"])
SLOW_CONSUMERS = Counter("torchwire_events_slow_consumer_closes_total",
                         "Subscriber connections closed because they did not keep up", ["transport"])

DB_POOL_CONNECTIONS = Gauge("torchwire_db_pool_connections", "Connections held by the database pool",
                            ["database", "state"], multiprocess_mode="livesum")
DB_POOL_MAX = Gauge("torchwire_db_pool_max_connections", "The database pool's max_size", ["database"],
                    multiprocess_mode="livesum")
DB_POOL_WAITING = Gauge("torchwire_db_pool_waiting_requests", "Requests waiting for a pooled connection now",
                        ["database"], multiprocess_mode="livesum")
DB_POOL_QUEUED = Counter("torchwire_db_pool_requests_queued_total", "Connection requests that had to wait",
                         ["database"])
DB_POOL_WAIT = Counter("torchwire_db_pool_wait_seconds_total", "Time spent waiting for a pooled connection",
                       ["database"])
DB_POOL_ERRORS = Counter("torchwire_db_pool_errors_total",
                         "Failed connection requests (timeouts) and failed connection attempts", ["database", "error"])

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


_http_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def http_request(*, route: str, method: str, status: int, seconds: float) -> None:
    """``route`` is the URL pattern (``/api/v1/models/<name>``), never the raw path: one series per route."""
    key = (route, method, status)
    series = _http_series.get(key)
    if series is None:
        # `labels()` takes a lock and builds the label tuple on every call: a few µs per request.
        method = method if method in _METHODS else "OTHER"
        series = HTTP_REQUESTS.labels(route, method, str(status)), HTTP_LATENCY.labels(route, method)
        if len(_http_series) < 10_000:  # routes x methods x statuses; bounded all the same
            _http_series[key] = series
    series[0].inc()
    series[1].observe(seconds)


_inference_series: dict[tuple[str, str, str, str], Any] = {}
_inference_latency: dict[tuple[str, str], Any] = {}


def inference_request(*, model: str, version: str, protocol: str, status: str, seconds: float) -> None:
    """One inference call's outcome (``torchwire_inference_requests_total``, ``..._latency_seconds``)."""
    key = (model, version, protocol, status)
    counter = _inference_series.get(key)
    if counter is None:
        counter = INFERENCE_REQUESTS.labels(model, version, protocol, status)
        if len(_inference_series) < 100_000:
            _inference_series[key] = counter
    counter.inc()
    latency = _inference_latency.get((model, protocol))
    if latency is None:
        latency = INFERENCE_LATENCY.labels(model, protocol)
        if len(_inference_latency) < 100_000:
            _inference_latency[(model, protocol)] = latency
    latency.observe(seconds)


# Websockets and events. The consumers (realtime/) call these; each is a few dict operations.

_sockets: weakref.WeakKeyDictionary[Any, weakref.finalize[Any, Any]] = weakref.WeakKeyDictionary()


def websocket_opened(consumer: object) -> None:
    """Counts an accepted socket until `websocket_closed` for the same consumer or, should that never
    come (a consumer stopped without its disconnect handler), until the consumer is garbage-collected."""
    if consumer in _sockets:
        return
    kind = type(consumer).__name__
    gauge = WEBSOCKETS_OPEN.labels(kind)
    gauge.inc()
    WEBSOCKETS_ACCEPTED.labels(kind).inc()
    _sockets[consumer] = weakref.finalize(consumer, gauge.dec)


def websocket_closed(consumer: object) -> None:
    """Idempotent; a consumer never opened is ignored."""
    finalizer = _sockets.pop(consumer, None)
    if finalizer is not None:
        finalizer()


class PrometheusBusObserver(bus.BusObserver):
    """Counts the events `realtime.bus` appends."""

    def published(self, topic: str) -> None:
        event_published(topic)


def event_published(topic: str) -> None:
    """After an event is in its topic's log. In a Celery worker the count goes through Redis."""
    prefix = topic.partition(":")[0]
    if celery_metrics.in_worker():
        celery_metrics.event_published(prefix)
    else:
        EVENTS_PUBLISHED.labels(prefix).inc()


def event_delivered(n: int = 1, *, transport: str = "ws") -> None:
    if n > 0:
        EVENTS_DELIVERED.labels(transport).inc(n)


def event_replayed(n: int = 1, *, transport: str = "ws") -> None:
    if n > 0:
        EVENTS_REPLAYED.labels(transport).inc(n)


def event_dropped(n: int = 1, *, reason: str = "slow_consumer") -> None:
    if n > 0:
        EVENTS_DROPPED.labels(reason).inc(n)


def slow_consumer_closed(*, transport: str = "ws") -> None:
    SLOW_CONSUMERS.labels(transport).inc()


# The database pool: sampled by every ASGI process (gauges sum across processes in multiprocess mode).

_pool_lock = threading.Lock()
_pool_seen: dict[str, dict[str, int]] = {}
_POOL_COUNTERS: tuple[tuple[Counter, str, float, dict[str, str]], ...] = (
    (DB_POOL_QUEUED, "requests_queued", 1.0, {}),
    (DB_POOL_WAIT, "requests_wait_ms", 1000.0, {}),
    (DB_POOL_ERRORS, "requests_errors", 1.0, {"error": "request"}),
    (DB_POOL_ERRORS, "connections_errors", 1.0, {"error": "connect"}),
)


def db_pool_sample() -> None:
    """Copies this process's psycopg pool statistics into the pool metrics; nothing for SQLite."""
    from django.db import connections

    with _pool_lock:
        for alias in connections:
            wrapper = connections[alias]
            pool = getattr(wrapper, "pool", None) if wrapper.vendor == "postgresql" else None
            # A pool opens on first use; before that its size counts min_size connections it has not made.
            if pool is None or pool.closed:
                continue
            stats: dict[str, int] = pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            DB_POOL_CONNECTIONS.labels(alias, "idle").set(idle)
            DB_POOL_CONNECTIONS.labels(alias, "in_use").set(max(size - idle, 0))
            DB_POOL_MAX.labels(alias).set(stats.get("pool_max", 0))
            DB_POOL_WAITING.labels(alias).set(stats.get("requests_waiting", 0))
            seen = _pool_seen.get(alias, {})
            for counter, key, scale, labels in _POOL_COUNTERS:
                delta = stats.get(key, 0) - seen.get(key, 0)
                if delta > 0:
                    counter.labels(database=alias, **labels).inc(delta / scale)
            _pool_seen[alias] = stats


POOL_SAMPLE_SECONDS = 5.0
_sampler: asyncio.Task[None] | None = None


async def _sample_forever() -> None:
    while True:
        try:
            db_pool_sample()
        except Exception:
            logger.exception("sampling the database pool failed")
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


async def sampler_start() -> None:
    """Lifespan start (asgi.py): samples the database pool every POOL_SAMPLE_SECONDS on the event loop."""
    global _sampler
    _sampler = asyncio.create_task(_sample_forever())


async def sampler_stop() -> None:
    """Lifespan stop: also marks this process dead for prometheus multiprocess mode."""
    if _sampler is not None:
        _sampler.cancel()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        _multiprocess.mark_process_dead(os.getpid(), directory)


# Scrape-time collectors: each is asked on every scrape; one that fails is reported, not fatal.

def _job_metrics() -> list[Metric]:
    from django.db.models import Count


    states = (JobState.QUEUED, JobState.RUNNING)
    counts = {(kind.value, state.value): 0 for kind in JobKind for state in states}
    for row in Job.objects.filter(state__in=states).values("kind", "state").annotate(n=Count("id")):
        counts[(row["kind"], row["state"])] = row["n"]
    family = GaugeMetricFamily("torchwire_jobs", "Jobs waiting for or held by a worker", labels=["kind", "state"])
    for (kind, state), n in sorted(counts.items()):
        family.add_metric([kind, state], float(n))
    return [family]


# Gauges owned by components above monitoring (app.serving's pool), refreshed on the loop just before a
# scrape; the owner registers when it exists (`before_scrape`), so monitoring imports none of them.
_refreshers: list[Callable[[], None]] = []


def before_scrape(refresh: Callable[[], None]) -> None:
    """Calls ``refresh()`` on the event loop before each /metrics scrape. Registering twice is a no-op."""
    if refresh not in _refreshers:
        _refreshers.append(refresh)


def refresh_gauges() -> None:
    for refresh in list(_refreshers):
        refresh()


SCRAPERS: list[tuple[str, Callable[[], list[Metric]]]] = [
    ("celery_tasks", celery_metrics.task_metrics),
    ("celery_queues", celery_metrics.queue_metrics),
    ("jobs", _job_metrics),
]

_LIVE_FILE = re.compile(r"gauge_live\w+_([0-9]+)\.db")


def _forget_dead_processes(directory: str) -> None:
    """Drops the live gauges of processes that died without their shutdown hook (a crash, a kill -9)."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        match = _LIVE_FILE.fullmatch(os.path.basename(path))
        if match is None or int(match[1]) == os.getpid():
            continue
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            _multiprocess.mark_process_dead(int(match[1]), directory)
        except PermissionError:
            pass


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _merge(families: Iterable[Metric]) -> list[Metric]:
    """One family per name: the same counter may come from this process and from Redis (events that
    workers published); samples with the same labels add up."""
    merged: dict[str, Metric] = {}
    index: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], int]] = {}
    for family in families:
        target = merged.get(family.name)
        if target is None:
            target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            index[family.name] = {}
        positions = index[family.name]
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            at = positions.get(key)
            if at is None:
                positions[key] = len(target.samples)
                target.samples.append(sample)
            else:
                old = target.samples[at]
                value = min(old.value, sample.value) if sample.name.endswith("_created") else old.value + sample.value
                target.samples[at] = old._replace(value=value)
    return list(merged.values())


def render() -> bytes:
    """The /metrics body. Blocking (metric files, Redis, one query): call it off the event loop, through
    ``db_async`` so the query's connection goes back to the pool."""
    return generate_latest(_Families(collect()))


def collect() -> list[Metric]:
    """Every metric family of the deployment, merged over processes (what `render` writes). Blocking,
    like `render`."""
    try:
        db_pool_sample()
    except Exception:
        logger.exception("sampling the database pool failed")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        _forget_dead_processes(directory)
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, directory)
        families = list(registry.collect())
    else:
        families = list(REGISTRY.collect())
    up = GaugeMetricFamily("torchwire_metrics_collector_up", "Whether a scrape-time collector answered",
                           labels=["collector"])
    for name, scrape in SCRAPERS:
        try:
            families.extend(scrape())
        except Exception as exc:
            logger.warning("metrics collector %s failed: %r", name, exc)
            up.add_metric([name], 0.0)
        else:
            up.add_metric([name], 1.0)
    families.append(up)
    return _merge(families)
