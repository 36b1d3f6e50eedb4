"""Turning what `recording.Recorder` buffered into rows: `_write` runs on the executor thread (through
``db_async``), never on the serving loop; `Pending` is one sampled request as the loop left it."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.conf import settings
from prometheus_client import Counter

from . import services
from .models import InputKind, PredictionRecord, RequestStats, Task

ROWS_RECORDED = Counter("torchwire_prediction_rows_recorded_total", "Sampled prediction rows written", ["model"])


@dataclass(slots=True)
class Pending:
    """A sampled request waiting to be written; arrays and records are the request's own objects."""

    model_id: int
    model: str
    version: int
    protocol: str
    prediction_id: str
    at: float
    latency_ms: float
    rows: int
    task: str
    labels: list[str]
    records: Sequence[Mapping[str, Any]] | None = None
    answers: Sequence[Mapping[str, Any]] | None = None
    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Mapping[str, np.ndarray] | None = None
    output_name: str | None = None


def _write(pending: list[Pending], stats: list[dict[str, Any]], source_name: str) -> None:
    records = [record for item in pending for record in _expand(item)]
    services.monitoring_batch_write(
        records=records, stats=[RequestStats(source=source_name, **row) for row in stats]
    )
    for item in pending:
        ROWS_RECORDED.labels(item.model).inc(item.rows)


def _expand(item: Pending) -> list[PredictionRecord]:
    common: dict[str, Any] = {
        "model_id": item.model_id, "version": item.version, "prediction_id": uuid.UUID(item.prediction_id),
        "rows": item.rows, "protocol": item.protocol, "created_at": datetime.fromtimestamp(item.at, tz=UTC),
        "latency_ms": item.latency_ms,
    }
    out: list[PredictionRecord] = []
    if item.records is not None and item.answers is not None:
        for row, (record, answer) in enumerate(zip(item.records, item.answers, strict=False)):
            label, value = answer.get("label"), _finite(answer.get("value"))
            task = Task.CLASSIFICATION if label is not None else Task.REGRESSION if value is not None else ""
            out.append(PredictionRecord(
                row=row, kind=InputKind.RECORDS, inputs=_clean(dict(record)), outputs=_clean(dict(answer)),
                task=task, label="" if label is None else str(label), value=value, **common,
            ))
        return out
    inputs = {name: _tensor_rows(array, item.rows) for name, array in (item.inputs or {}).items()}
    outputs = {name: _tensor_rows(array, item.rows) for name, array in (item.outputs or {}).items()}
    scored = _scores(item)
    for row in range(item.rows):
        task, label, value = scored[row] if scored is not None else ("", None, None)
        row_inputs = {name: rows[row][0] for name, rows in inputs.items() if row < len(rows)}
        row_outputs = {name: rows[row][0] for name, rows in outputs.items() if row < len(rows)}
        truncated = any(rows[row][1] for rows in (*inputs.values(), *outputs.values()) if row < len(rows))
        out.append(PredictionRecord(
            row=row, kind=InputKind.TENSORS, inputs=row_inputs, outputs=row_outputs, truncated=truncated,
            task=task, label=label or "", value=value, **common,
        ))
    return out


def _tensor_rows(array: np.ndarray, rows: int) -> list[tuple[Any, bool]]:
    """Per row: its values as JSON (nested lists; flat and cut to PREDICTION_MAX_VALUES when longer) and
    whether they were cut."""
    cap = settings.PREDICTION_MAX_VALUES
    if array.ndim == 0 or array.shape[0] != rows:
        return []
    finite = array.dtype.kind != "f" or bool(np.isfinite(array).all())
    out: list[tuple[Any, bool]] = []
    for row in array:
        cut = row.size > cap
        values = row.reshape(-1)[:cap].tolist() if cut else row.tolist()
        out.append((values if finite else _clean(values), cut))
    return out


def _scores(item: Pending) -> list[tuple[str, str | None, float | None]] | None:
    """(task, predicted label, predicted value) per row from the first output. Torchwire-trained versions
    say their task and labels; another model counts as regression when it outputs one value per row,
    else as classification by the index of its largest output."""
    array = (item.outputs or {}).get(item.output_name or "")
    if array is None or array.ndim == 0 or array.shape[0] != item.rows:
        return None
    flat = np.asarray(array, dtype=np.float64).reshape(item.rows, -1)
    if flat.shape[1] == 0:
        return None
    if item.task == "regression" or (item.task != "classification" and flat.shape[1] == 1):
        return [("regression", None, _finite(float(v))) for v in flat[:, 0]]
    named = item.task == "classification" and len(item.labels) == flat.shape[1]
    winners = np.nan_to_num(flat, nan=-np.inf).argmax(axis=1)
    return [("classification", item.labels[w] if named else str(int(w)), None) for w in winners]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (which a client may send and a model may output) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
