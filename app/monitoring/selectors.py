"""Reads for model monitoring. Callers fetch the model with `app.registry.selectors.model_get` first, so
a model the caller cannot read is a 404 before anything here runs."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Abs, TruncMinute
from django.utils import timezone

from app.core.errors import Invalid
from app.registry.models import MlModel, ModelVersion
from app.registry.selectors import model_version_get
from inference.errors import ArtifactError
from tabular.features import FeaturePipeline

from . import drift
from .models import (
    LATENCY_EDGES_MS,
    DriftReport,
    DriftStatus,
    InputKind,
    MonitoringConfig,
    PredictionRecord,
    RequestStats,
    Task,
)

WINDOW_RE = re.compile(r"([0-9]{1,6})([smhd])")
WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_WINDOW = timedelta(minutes=1)
PERCENTILES = (0.5, 0.9, 0.95, 0.99)
MAX_BUCKETS = 60


def parse_window(raw: str) -> timedelta:
    """``15m``, ``1h``, ``7d`` (also ``s``): from a minute to the retention period, else 422."""
    match = WINDOW_RE.fullmatch(raw) if isinstance(raw, str) else None
    longest = timedelta(days=settings.MONITORING_RETENTION_DAYS)
    window = timedelta(seconds=int(match[1]) * WINDOW_UNITS[match[2]]) if match else None
    if window is None or not MIN_WINDOW <= window <= longest:
        message = f"window must be a number and a unit (s, m, h, d) from 1m to {longest.days}d, like 15m, 1h or 7d"
        raise Invalid(f"invalid window {raw!r}: {message}",
                      details=[{"loc": ["query", "window"], "field": "window", "msg": message}])
    return window


# --- configuration ---------------------------------------------------------------------------------


def monitoring_config(*, model: MlModel) -> dict[str, Any]:
    """The model's effective settings and which of them it overrides (null: the deployment default)."""
    config = MonitoringConfig.objects.filter(model=model).first()
    sample_rate = config.sample_rate if config else None
    threshold = config.drift_threshold if config else None
    return {
        "sample_rate": settings.PREDICTION_SAMPLE_RATE if sample_rate is None else sample_rate,
        "drift_threshold": settings.DRIFT_THRESHOLD if threshold is None else threshold,
        "overrides": {"sample_rate": sample_rate, "drift_threshold": threshold},
    }


def sample_rates(*, model_ids: Iterable[int]) -> dict[int, float]:
    """Overridden sample rates of these models; a model missing from the answer uses the default."""
    rows = MonitoringConfig.objects.filter(model_id__in=list(model_ids), sample_rate__isnull=False)
    return {model_id: rate for model_id, rate in rows.values_list("model_id", "sample_rate") if rate is not None}


def drift_threshold(*, model: MlModel) -> float:
    threshold = MonitoringConfig.objects.filter(model=model).values_list("drift_threshold", flat=True).first()
    return settings.DRIFT_THRESHOLD if threshold is None else float(threshold)


# --- drift -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What a Torchwire-trained version knows about its training data."""

    pipeline: FeaturePipeline
    stats: dict[str, dict[str, Any]]
    task: str
    labels: list[str]
    target: str


def version_references(*, model: MlModel, numbers: Sequence[int]) -> dict[int, Reference]:
    """The references of those versions that have one (a feature pipeline and ``reference_stats``)."""
    found: dict[int, Reference] = {}
    for number, extras in ModelVersion.objects.filter(model=model, number__in=numbers).values_list("number", "extras"):
        if not isinstance(extras, dict):
            continue
        pipeline_data, stats = extras.get("pipeline"), extras.get("reference_stats")
        if not isinstance(pipeline_data, dict) or not isinstance(stats, dict):
            continue
        try:
            pipeline = FeaturePipeline.from_dict(pipeline_data)
        except ArtifactError:
            continue
        found[number] = Reference(pipeline=pipeline, stats=stats, task=str(extras.get("task") or ""),
                                  labels=[str(label) for label in extras.get("labels") or []],
                                  target=str(extras.get("target") or ""))
    return found


def versions_recorded(*, model: MlModel, since: datetime, records_only: bool = False) -> list[int]:
    rows = PredictionRecord.objects.filter(model=model, created_at__gte=since)
    if records_only:
        rows = rows.filter(kind=InputKind.RECORDS)
    return sorted(set(rows.values_list("version", flat=True).distinct()))


def recorded_pairs(*, since: datetime) -> set[tuple[int, int]]:
    """(model id, version) of every version with raw records recorded since ``since``."""
    rows = PredictionRecord.objects.filter(created_at__gte=since, kind=InputKind.RECORDS)
    return set(rows.values_list("model_id", "version").distinct())


def _window(model: MlModel, version: int, start: datetime, end: datetime) -> Any:
    return PredictionRecord.objects.filter(model=model, version=version, created_at__gte=start, created_at__lt=end)


def drift_analysis(
    *, model: MlModel, version: int, reference: Reference, start: datetime, end: datetime, threshold: float
) -> dict[str, Any]:
    """Recorded raw records of ``version`` in [start, end) (the latest DRIFT_MAX_SAMPLES) against its
    training reference, and the distribution of its predictions."""
    inputs = list(
        _window(model, version, start, end).filter(kind=InputKind.RECORDS)
        .order_by("-created_at").values_list("inputs", flat=True)[: settings.DRIFT_MAX_SAMPLES]
    )
    records = [r for r in inputs if isinstance(r, dict)]
    features = (
        drift.feature_drift(pipeline=reference.pipeline, reference=reference.stats, records=records,
                            threshold=threshold)
        if records else []
    )
    enough = len(records) >= settings.DRIFT_MIN_SAMPLES
    if not enough:
        for feature in features:
            feature["drifted"] = False
    drifted = [f["feature"] for f in features if f["drifted"]]
    status = DriftStatus.INSUFFICIENT_DATA if not enough else DriftStatus.DRIFT if drifted else DriftStatus.OK
    return {
        "status": str(status),
        "sample_count": len(records),
        "threshold": threshold,
        "drifted_features": drifted,
        "features": features,
        "predictions": predictions_summary(model=model, version=version, start=start, end=end, reference=reference),
    }


def predictions_summary(
    *, model: MlModel, version: int, start: datetime, end: datetime, reference: Reference | None
) -> dict[str, Any]:
    """Class fractions (classification) or value statistics (regression) of the recorded predictions,
    compared with the training target's histogram when the reference holds one."""
    rows = _window(model, version, start, end)
    target_stats = reference.stats.get(reference.target) if reference is not None and reference.target else None
    counts = dict(
        rows.filter(task=Task.CLASSIFICATION).values_list("label").annotate(n=Count("id")).values_list("label", "n")
    )
    if counts:
        return drift.classification_summary(counts={str(k): int(v) for k, v in counts.items()},
                                            labels=reference.labels if reference else [], reference=target_stats)
    values = list(
        rows.filter(task=Task.REGRESSION, value__isnull=False).order_by("-created_at")
        .values_list("value", flat=True)[: settings.DRIFT_MAX_SAMPLES]
    )
    if values:
        return drift.regression_summary(values=np.asarray(values, dtype=np.float64), reference=target_stats)
    task = reference.task if reference is not None else ""
    return {"task": task or None, "count": 0, "psi": None}


def drift_report_out(report: DriftReport, *, model_name: str, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": report.pk,
        "model": model_name,
        "version": report.version,
        "created_at": report.created_at.isoformat(),
        "trigger": report.trigger,
        "window": {"start": report.window_start.isoformat(), "end": report.window_end.isoformat()},
        "status": report.status,
        "drifted": report.status == DriftStatus.DRIFT,
        "drifted_features": report.drifted_features,
        "sample_count": report.sample_count,
        "threshold": report.threshold,
    }
    if full:
        out["features"] = report.features
        out["predictions"] = report.predictions
    return out


# --- the monitoring summary -------------------------------------------------------------------------


def _bucket_seconds(window: timedelta) -> int:
    """Whole minutes, at most MAX_BUCKETS buckets over the window."""
    return max(60, math.ceil(window.total_seconds() / MAX_BUCKETS / 60) * 60)


def _bucket_starts(start: datetime, end: datetime, size: int) -> list[int]:
    first = int(start.timestamp()) // size * size
    return list(range(first, int(end.timestamp()) + 1, size))


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _percentile(buckets: Sequence[int], q: float, max_ms: float) -> float | None:
    """Linear interpolation inside the histogram bucket that holds the q-quantile; the top of every
    bucket is clamped to the largest latency seen, so the estimate never exceeds it."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = 0.0 if i == 0 else float(LATENCY_EDGES_MS[i - 1])
            high = min(float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else max_ms, max_ms)
            return round(low + max(high - low, 0.0) * (rank - seen) / count, 3)
        seen += count
    return round(max_ms, 3)


def _merge(into: list[int], buckets: Sequence[int]) -> None:
    for i, count in enumerate(buckets[: len(into)]):
        into[i] += int(count)


def requests_summary(
    *, model: MlModel, start: datetime, end: datetime, bucket: int, version: int | None
) -> dict[str, Any]:
    """Request rate, errors and latency from the per-minute `RequestStats` of every serving process.
    Minutes are whole, so the first one may start up to a minute before ``start``."""
    rows = RequestStats.objects.filter(model=model, minute__gte=start.replace(second=0, microsecond=0),
                                       minute__lt=end)
    if version is not None:
        rows = rows.filter(version=version)
    width = len(LATENCY_EDGES_MS) + 1
    total: dict[str, Any] = {"count": 0, "errors": 0, "rows": 0, "sum": 0.0, "max": 0.0, "buckets": [0] * width}
    statuses: dict[str, int] = defaultdict(int)
    protocols: dict[str, int] = defaultdict(int)
    series: dict[int, dict[str, Any]] = {
        b: {"count": 0, "errors": 0, "max": 0.0, "buckets": [0] * width} for b in _bucket_starts(start, end, bucket)
    }
    for row in rows:
        total["count"] += row.requests
        total["errors"] += row.errors
        total["rows"] += row.rows
        total["sum"] += row.latency_sum_ms
        total["max"] = max(total["max"], row.latency_max_ms)
        _merge(total["buckets"], row.latency_buckets)
        protocols[row.protocol] += row.requests
        for status, count in row.statuses.items():
            statuses[status] += int(count)
        slot = series.get(int(row.minute.timestamp()) // bucket * bucket)
        if slot is not None:
            slot["count"] += row.requests
            slot["errors"] += row.errors
            slot["max"] = max(slot["max"], row.latency_max_ms)
            _merge(slot["buckets"], row.latency_buckets)
    count, seconds = total["count"], (end - start).total_seconds()
    return {
        "count": count,
        "rows": total["rows"],
        "rate_per_second": round(count / seconds, 6),
        "errors": total["errors"],
        "error_rate": round(total["errors"] / count, 6) if count else 0.0,
        "by_status": {"ok": count - total["errors"], **dict(statuses)},
        "by_protocol": dict(protocols),
        "latency_ms": {
            "mean": round(total["sum"] / count, 3) if count else None,
            **{f"p{round(q * 100)}": _percentile(total["buckets"], q, total["max"]) for q in PERCENTILES},
            "max": round(total["max"], 3) if count else None,
        },
        "series": [
            {"start": _iso(b), "count": s["count"], "errors": s["errors"],
             "rate_per_second": round(s["count"] / bucket, 6),
             "latency_ms_p95": _percentile(s["buckets"], 0.95, s["max"])}
            for b, s in sorted(series.items())
        ],
    }


def accuracy_summary(
    *, model: MlModel, version: int, start: datetime, end: datetime, bucket: int, task: str | None
) -> dict[str, Any]:
    """Live accuracy (classification) or RMSE and MAE (regression) of the predictions made in the window
    that have feedback, overall and per bucket of prediction time."""
    per_minute = (
        _window(model, version, start, end).filter(feedback_at__isnull=False)
        .annotate(minute=TruncMinute("created_at")).values("minute")
        .annotate(labeled=Count("id"), correct=Count("id", filter=Q(correct=True)),
                  scored=Count("id", filter=Q(error__isnull=False)),
                  squared=Sum(F("error") * F("error")), absolute=Sum(Abs("error")))
    )
    slots: dict[int, dict[str, float]] = {
        b: {"labeled": 0, "correct": 0, "scored": 0, "squared": 0.0, "absolute": 0.0}
        for b in _bucket_starts(start, end, bucket)
    }
    total: dict[str, float] = {"labeled": 0, "correct": 0, "scored": 0, "squared": 0.0, "absolute": 0.0}
    for row in per_minute:
        slot = slots.get(int(row["minute"].timestamp()) // bucket * bucket)
        for key in total:
            amount = row[key] or 0
            total[key] += amount
            if slot is not None:
                slot[key] += amount
    regression = task == Task.REGRESSION or (task != Task.CLASSIFICATION and total["scored"] > 0)

    def metric(part: dict[str, float]) -> float | None:
        if regression:
            return round(math.sqrt(part["squared"] / part["scored"]), 6) if part["scored"] else None
        return round(part["correct"] / part["labeled"], 6) if part["labeled"] else None

    out: dict[str, Any] = {"metric": "rmse" if regression else "accuracy", "value": metric(total),
                           "labeled": int(total["labeled"])}
    if regression:
        out["mae"] = round(total["absolute"] / total["scored"], 6) if total["scored"] else None
    out["series"] = [{"start": _iso(b), "labeled": int(s["labeled"]), "value": metric(s)}
                     for b, s in sorted(slots.items())]
    return out


def monitoring_summary(*, model: MlModel, window: timedelta, version: int | None = None) -> dict[str, Any]:
    """Everything GET /models/{name}/monitoring answers: traffic of the model, and per version with
    traffic in the window its prediction distribution, live accuracy, drift and last stored check."""
    end = timezone.now()
    start = end - window
    bucket = _bucket_seconds(window)
    config = monitoring_config(model=model)
    if version is not None:
        model_version_get(model=model, number=version)
        numbers = [version]
    else:
        served = RequestStats.objects.filter(model=model, minute__gte=start - timedelta(minutes=1), minute__lt=end)
        numbers = sorted(set(versions_recorded(model=model, since=start))
                         | set(served.values_list("version", flat=True).distinct()))
    references = version_references(model=model, numbers=numbers)
    versions = []
    for number in numbers:
        reference = references.get(number)
        rows = _window(model, number, start, end)
        latest = DriftReport.objects.filter(model=model, version=number).order_by("-created_at").first()
        analysis: dict[str, Any] | None = None
        if reference is not None:
            analysis = drift_analysis(model=model, version=number, reference=reference, start=start, end=end,
                                      threshold=config["drift_threshold"])
            predictions = analysis.pop("predictions")
        else:
            predictions = predictions_summary(model=model, version=number, start=start, end=end, reference=None)
        task = predictions.get("task")
        versions.append({
            "version": number,
            "recorded": rows.count(),
            "predictions": predictions,
            "accuracy": accuracy_summary(model=model, version=number, start=start, end=end, bucket=bucket,
                                         task=task),
            "drift": analysis,
            "last_check": drift_report_out(latest, model_name=model.name, full=False) if latest else None,
        })
    return {
        "model": model.name,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "seconds": int(window.total_seconds()),
                   "bucket_seconds": bucket},
        "config": config,
        "requests": requests_summary(model=model, start=start, end=end, bucket=bucket, version=version),
        "versions": versions,
    }


# --- the console's overview --------------------------------------------------------------------------


def traffic_by_model(*, models: Sequence[MlModel], now: datetime | None = None) -> list[dict[str, Any]]:
    """Requests per second of each model over the last whole minute and the current one, from the
    per-minute `RequestStats` every serving process writes (about once a second), in one query."""
    now = now or timezone.now()
    start = (now - timedelta(minutes=1)).replace(second=0, microsecond=0)
    seconds = max((now - start).total_seconds(), 1.0)
    rows = (RequestStats.objects.filter(model__in=[m.pk for m in models], minute__gte=start)
            .values("model_id").annotate(requests=Sum("requests"), errors=Sum("errors")))
    by_id = {row["model_id"]: row for row in rows}
    out = []
    for model in models:
        row = by_id.get(model.pk, {})
        requests, errors = int(row.get("requests") or 0), int(row.get("errors") or 0)
        out.append({"model": model.name, "requests": requests, "errors": errors,
                    "rate_per_second": round(requests / seconds, 3), "since": start.isoformat()})
    return out


def drift_report_list(*, model: MlModel, limit: int, version: int | None = None) -> list[dict[str, Any]]:
    """The model's stored drift checks, oldest first (the last ``limit``), with PSI per feature: drift
    over time."""
    reports = DriftReport.objects.filter(model=model)
    if version is not None:
        reports = reports.filter(version=version)
    newest = list(reports.order_by("-created_at")[:limit])
    return [
        {**drift_report_out(r, model_name=model.name, full=False),
         "psi": {f["feature"]: f["psi"] for f in r.features if isinstance(f, dict) and "feature" in f}}
        for r in reversed(newest)
    ]


def drift_alert_list(*, models: Sequence[MlModel], limit: int) -> list[dict[str, Any]]:
    """The newest drift reports past their threshold on these models."""
    names = {m.pk: m.name for m in models}
    reports = DriftReport.objects.filter(model_id__in=list(names), status=DriftStatus.DRIFT).order_by("-created_at")
    return [drift_report_out(r, model_name=names[r.model_id], full=False) for r in reports[:limit]]
