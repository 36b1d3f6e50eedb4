"""The deployment's health in figures for the console's system page: what /metrics exposes, read from
the same collected families (`metrics.collect`) and turned into JSON here, so no client parses the
Prometheus text format. Counters and histograms are cumulative since each process started."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric

from . import metrics


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """From cumulative (upper bound, count) pairs, sorted: linear inside the bucket holding the rank."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    low, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return low
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return low + (bound - low) * share
        low, below = bound, cumulative
    return low


def _families(families: Iterable[Metric]) -> dict[str, Metric]:
    return {f.name: f for f in families}


def _http(family: Metric | None) -> list[dict[str, Any]]:
    if family is None:
        return []
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    counts: dict[tuple[str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    for sample in family.samples:
        key = (sample.labels.get("route", ""), sample.labels.get("method", ""))
        if sample.name.endswith("_bucket"):
            buckets[key].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            counts[key] = sample.value
        elif sample.name.endswith("_sum"):
            sums[key] = sample.value
    out = []
    for key, count in counts.items():
        if not count:
            continue
        series = sorted(buckets[key])
        p50, p99 = _quantile(series, 0.5), _quantile(series, 0.99)
        out.append({
            "route": key[0], "method": key[1], "count": int(count),
            "mean_ms": round(sums.get(key, 0.0) / count * 1000, 3),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        })
    return sorted(out, key=lambda r: -r["count"])


def _by_label(family: Metric | None, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for sample in family.samples if family is not None else []:
        out[sample.labels.get(label, "")] += sample.value
    return dict(out)


def system_overview() -> dict[str, Any]:
    """Blocking (metric files, Redis, one query): call through ``db_async``."""
    found = _families(metrics.collect())
    pool: dict[str, dict[str, float]] = defaultdict(dict)
    for name, key in (("torchwire_db_pool_connections", None), ("torchwire_db_pool_max_connections", "max"),
                      ("torchwire_db_pool_waiting_requests", "waiting")):
        family = found.get(name)
        for sample in family.samples if family is not None else []:
            database = sample.labels.get("database", "default")
            field = key or sample.labels.get("state", "connections")
            pool[database][field] = pool[database].get(field, 0.0) + sample.value
    unacked = found.get("torchwire_celery_unacked_messages")
    return {
        "http": _http(found.get("torchwire_http_request_duration_seconds")),
        "websockets_open": {
            k: int(v) for k, v in _by_label(found.get("torchwire_websockets_open"), "consumer").items()
        },
        "db_pool": {db: {k: int(v) for k, v in fields.items()} for db, fields in pool.items()},
        "celery_queues": {k: int(v) for k, v in _by_label(found.get("torchwire_celery_queue_length"), "queue").items()},
        "celery_unacked": int(unacked.samples[0].value) if unacked is not None and unacked.samples else None,
        "collectors_up": {k: bool(v) for k, v in _by_label(found.get("torchwire_metrics_collector_up"),
                                                             "collector").items()},
    }
