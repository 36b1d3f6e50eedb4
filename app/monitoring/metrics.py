"""Prometheus metrics of the serving path. prometheus-client multiprocess mode is used when
PROMETHEUS_MULTIPROC_DIR is set (several uvicorn workers), so /metrics aggregates across them."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

from inference.batcher import BatchObserver

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

    def queue_depth(self, rows: int) -> None:
        self._depth.set(rows)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        self._size.observe(rows)
        self._compute.observe(compute_seconds)

    def rejected(self, reason: str) -> None:
        REJECTED.labels(model=self._model, reason=reason).inc()


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
