"""Feature encoding for tabular models: typed column values in, one float32 matrix out.

A `FeaturePipeline` is fitted on the training split only, so nothing about validation rows leaks
into the encoding, and it serialises to JSON (never pickle) to be stored next to the weights.

Public API::

    FeaturePipeline.fit(columns, kinds, *, top_k=20) -> FeaturePipeline
    pipeline.transform_columns(columns) -> np.ndarray        # [rows, n_features] float32
    pipeline.transform_records(records) -> np.ndarray        # raw JSON records; InputError naming the column
    pipeline.feature_names, pipeline.n_features, pipeline.columns
    pipeline.reference_stats(columns) -> dict                # per input column, for drift checks
    pipeline.to_dict() / FeaturePipeline.from_dict(data)
    psi(expected, actual) -> float                           # population stability index of two histograms

Encoding per input column, in the order of `kinds`:

- numeric: a missing value becomes the train median, then ``(x - mean) / std`` with the train mean
  and population std of the imputed column (std 0 -> 1). One feature, named after the column.
- boolean: 0.0 or 1.0; a missing value becomes the train mode (a tie -> 0). One feature, unscaled.
- categorical: one-hot over the `top_k` most frequent train categories (ties by value), plus
  ``<column>=__unknown__`` for everything else: a category unseen or too rare in train, and a
  missing value. Missing folds into unknown because both mean "none of the known categories", and
  one bucket that absorbs both gets trained more often than two separate ones would.

Typed values are what `tabular.profiling` reads (rules in `tabular.values`): float, bool or str, None where missing.
`transform_records` takes JSON values from a client: a record must hold exactly the pipeline's
columns (an absent key is an error; null is a missing value); numbers for numeric columns, true/false
(or 0/1 and the boolean strings of `tabular.values`) for boolean ones, strings for categorical.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.errors import ArtifactError, InputError
from tabular.values import ColumnKind, from_json, json_type

__all__ = ["UNKNOWN", "FeaturePipeline", "psi"]

UNKNOWN = "__unknown__"
FORMAT_VERSION = 1
_DECILES = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class _Numeric:
    column: str
    median: float
    mean: float
    std: float
    edges: tuple[float, ...]  # deciles of the train values, for reference histograms


@dataclass(frozen=True)
class _Boolean:
    column: str
    fill: bool


@dataclass(frozen=True)
class _Categorical:
    column: str
    categories: tuple[str, ...]


_Encoding = _Numeric | _Boolean | _Categorical


class FeaturePipeline:
    def __init__(self, encodings: Sequence[_Encoding]) -> None:
        self._encodings = tuple(encodings)
        self._index = {e.column: e for e in self._encodings}
        if len(self._index) != len(self._encodings):
            raise ValueError("duplicate column in feature pipeline")

    @classmethod
    def fit(
        cls, columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, ColumnKind | str], *, top_k: int = 20
    ) -> FeaturePipeline:
        """Learn the encoding of each column in `kinds` from `columns`, which must be the train split."""
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        encodings: list[_Encoding] = []
        for name, kind in kinds.items():
            values = columns[name]
            kind = ColumnKind(kind)
            if kind is ColumnKind.NUMERIC:
                x = _floats(values)
                present = x[~np.isnan(x)]
                median = float(np.median(present)) if present.size else 0.0
                imputed = np.where(np.isnan(x), median, x)
                mean = float(imputed.mean()) if imputed.size else 0.0
                std = float(imputed.std()) if imputed.size else 0.0
                # A constant column must not blow up to inf; centring alone makes it all zeros.
                if not std > 1e-12 * max(1.0, abs(mean)):
                    std = 1.0
                edges = tuple(float(e) for e in np.unique(np.quantile(present, _DECILES))) if present.size else ()
                encodings.append(_Numeric(name, median, mean, std, edges))
            elif kind is ColumnKind.BOOLEAN:
                trues = sum(1 for v in values if v is True)
                falses = sum(1 for v in values if v is False)
                encodings.append(_Boolean(name, trues > falses))
            else:
                counts = Counter(v for v in values if v is not None)
                ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]
                encodings.append(_Categorical(name, tuple(str(v) for v, _ in ranked)))
        return cls(encodings)

    @property
    def columns(self) -> list[str]:
        return [e.column for e in self._encodings]

    @property
    def kinds(self) -> dict[str, ColumnKind]:
        return {e.column: _kind(e) for e in self._encodings}

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for e in self._encodings:
            if isinstance(e, _Categorical):
                names.extend(f"{e.column}={c}" for c in (*e.categories, UNKNOWN))
            else:
                names.append(e.column)
        return names

    @property
    def n_features(self) -> int:
        return sum(len(e.categories) + 1 if isinstance(e, _Categorical) else 1 for e in self._encodings)

    def transform_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Encode typed values (as `tabular.profiling` reads them); every pipeline column must be present."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise KeyError(f"column {missing[0]!r} is missing")
        lengths = {len(columns[c]) for c in self.columns}
        if len(lengths) > 1:
            raise ValueError("columns differ in length")
        rows = lengths.pop() if lengths else 0
        out = np.empty((rows, self.n_features), dtype=np.float32)
        at = 0
        for e in self._encodings:
            values = columns[e.column]
            if isinstance(e, _Numeric):
                x = _floats(values)
                out[:, at] = (np.where(np.isnan(x), e.median, x) - e.mean) / e.std
                at += 1
            elif isinstance(e, _Boolean):
                out[:, at] = [float(e.fill if v is None else bool(v)) for v in values]
                at += 1
            else:
                width = len(e.categories) + 1
                slot = {c: i for i, c in enumerate(e.categories)}
                hot = np.array([slot.get(v, width - 1) if v is not None else width - 1 for v in values], dtype=np.intp)
                block = np.zeros((rows, width), dtype=np.float32)
                block[np.arange(rows), hot] = 1.0
                out[:, at : at + width] = block
                at += width
        return out

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Validate and encode raw JSON records; `InputError` names the column (input) at fault."""
        if not isinstance(records, Sequence) or isinstance(records, str | bytes):
            raise InputError("records", "must be a list of objects")
        columns: dict[str, list[Any]] = {c: [] for c in self.columns}
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise InputError("records", f"record {i} must be an object, got {json_type(record)}")
            for key in record:
                if key not in self._index:
                    raise InputError(
                        str(key), f"record {i}: unknown column; the model takes {', '.join(map(repr, self.columns))}"
                    )
            for e in self._encodings:
                if e.column not in record:
                    raise InputError(e.column, f"record {i}: missing column (send null for a missing value)")
                columns[e.column].append(_coerce(e, record[e.column], i))
        return self.transform_columns(columns)

    def reference_stats(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, Any]]:
        """Histograms of typed values per input column, binned as fitted, JSON-serialisable.

        numeric: ``edges`` (train deciles, duplicates dropped) and ``fractions`` of the non-missing
        values in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``; categorical: ``categories``
        (the known ones, then ``__unknown__``) and ``fractions``; boolean: categories ``false``,
        ``true``. Each also has ``missing``, the fraction of all values that were missing, and
        ``count``. Fitting computes them on train; the same call on serving traffic gives what to
        compare with `psi`.
        """
        out: dict[str, dict[str, Any]] = {}
        for e in self._encodings:
            values = columns[e.column]
            total = len(values)
            if isinstance(e, _Numeric):
                x = _floats(values)
                present = x[~np.isnan(x)]
                bins = np.bincount(np.searchsorted(np.array(e.edges), present, side="left"), minlength=len(e.edges) + 1)
                out[e.column] = {
                    "kind": "numeric",
                    "edges": list(e.edges),
                    "fractions": _fractions(bins),
                    "missing": _ratio(total - present.size, total),
                    "count": total,
                }
                continue
            if isinstance(e, _Boolean):
                categories = ["false", "true"]
                counts = [sum(1 for v in values if v is False), sum(1 for v in values if v is True)]
            else:
                categories = [*e.categories, UNKNOWN]
                known = Counter(v for v in values if v is not None)
                counts = [known.get(c, 0) for c in e.categories]
                counts.append(sum(known.values()) - sum(counts))
            out[e.column] = {
                "kind": str(_kind(e)),
                "categories": categories,
                "fractions": _fractions(np.array(counts)),
                "missing": _ratio(sum(1 for v in values if v is None), total),
                "count": total,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        columns: list[dict[str, Any]] = []
        for e in self._encodings:
            if isinstance(e, _Numeric):
                columns.append(
                    {
                        "name": e.column,
                        "kind": "numeric",
                        "median": e.median,
                        "mean": e.mean,
                        "std": e.std,
                        "edges": list(e.edges),
                    }
                )
            elif isinstance(e, _Boolean):
                columns.append({"name": e.column, "kind": "boolean", "fill": e.fill})
            else:
                columns.append({"name": e.column, "kind": "categorical", "categories": list(e.categories)})
        return {"version": FORMAT_VERSION, "columns": columns}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a pipeline from `to_dict` output; `ArtifactError` if `data` is not one."""
        try:
            if data["version"] != FORMAT_VERSION:
                raise ValueError(f"unsupported version {data['version']!r}")
            encodings: list[_Encoding] = []
            for c in data["columns"]:
                name, kind = c["name"], ColumnKind(c["kind"])
                if not isinstance(name, str):
                    raise TypeError("column name must be a string")
                if kind is ColumnKind.NUMERIC:
                    median, mean, std = (_finite(c[k]) for k in ("median", "mean", "std"))
                    if std <= 0:
                        raise ValueError(f"std of {name!r} must be positive")
                    encodings.append(_Numeric(name, median, mean, std, tuple(_finite(v) for v in c["edges"])))
                elif kind is ColumnKind.BOOLEAN:
                    if not isinstance(c["fill"], bool):
                        raise TypeError(f"fill of {name!r} must be a boolean")
                    encodings.append(_Boolean(name, c["fill"]))
                else:
                    if not all(isinstance(v, str) for v in c["categories"]):
                        raise TypeError(f"categories of {name!r} must be strings")
                    encodings.append(_Categorical(name, tuple(c["categories"])))
            return cls(encodings)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"malformed feature pipeline: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeaturePipeline) and self._encodings == other._encodings

    def __hash__(self) -> int:
        return hash(self._encodings)

    def __repr__(self) -> str:
        return f"FeaturePipeline(columns={self.columns!r}, n_features={self.n_features})"


def psi(expected: Sequence[float], actual: Sequence[float], *, epsilon: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins (fractions, or counts).

    Empty bins are floored at `epsilon` so that a category absent on one side gives a large but
    finite value. Rule of thumb: < 0.1 stable, 0.1-0.25 drifting, > 0.25 shifted.
    """
    if len(expected) != len(actual) or not expected:
        raise ValueError("histograms must have the same, non-zero number of bins")
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = np.maximum(e / max(e.sum(), epsilon), epsilon)
    a = np.maximum(a / max(a.sum(), epsilon), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def _coerce(e: _Encoding, value: Any, row: int) -> float | bool | str | None:
    try:
        return from_json(_kind(e), value)
    except ValueError as exc:
        raise InputError(e.column, f"record {row}: {exc}") from None


def _kind(e: _Encoding) -> ColumnKind:
    if isinstance(e, _Numeric):
        return ColumnKind.NUMERIC
    if isinstance(e, _Boolean):
        return ColumnKind.BOOLEAN
    return ColumnKind.CATEGORICAL


def _floats(values: Sequence[Any]) -> np.ndarray:
    x = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    x[~np.isfinite(x)] = math.nan
    return x


def _fractions(counts: np.ndarray) -> list[float]:
    total = int(counts.sum())
    return [float(c) / total if total else 0.0 for c in counts]


def _ratio(part: int, total: int) -> float:
    return part / total if total else 0.0


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)
