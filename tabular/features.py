"""Feature encoding for tabular models: typed column values in, one float32 matrix out.

A `FeaturePipeline` is fitted on the training split only, so nothing about validation or test rows
leaks into the encoding, and it serialises to JSON (never pickle) to be stored next to the weights:
serving raw records runs exactly the encoding training saw.

Public API::

    FeaturePipeline.fit(columns, kinds, *, min_count=2, onehot_max=10, max_categories=0,
                        indicators=True, robust=True, top_k=None) -> FeaturePipeline
    pipeline.transform_columns(columns) -> np.ndarray        # [rows, n_features] float32
    pipeline.transform_records(records) -> np.ndarray        # raw JSON records; InputError naming the column
    pipeline.feature_names, pipeline.n_features, pipeline.columns
    pipeline.embeddings -> list[dict]                        # {"column", "size", "dim"} per embedded column
    pipeline.reference_stats(columns) -> dict                # per input column, for drift checks
    pipeline.to_dict() / FeaturePipeline.from_dict(data)     # format 2; format 1 (before embeddings) still reads
    embedding_dim(size) -> int                               # the dimension rule (docs/decisions.md)
    psi(expected, actual) -> float                           # population stability index of two histograms

Encoding per input column, in the order of `kinds`:

- numeric: a missing value becomes the train median; then ``(x - mean) / std`` with the train mean
  and population std of the imputed column (std 0 -> 1), or, for a heavy-tailed column (train
  skewness beyond `HEAVY_TAIL_SKEW`, with `robust`), its train quantile mapped onto a centred
  uniform of variance 1 ("quantile" scaling, 65 stored knots). With `indicators`, a column that had
  missing values in train gets a second feature ``<column>__missing`` (1.0 where missing).
- boolean: 0.0 or 1.0; a missing value becomes the train mode (a tie -> 0); with `indicators`, a
  ``__missing`` feature as for numbers. Unscaled.
- categorical: the vocabulary is every train value seen at least `min_count` times (most frequent
  first, ties by value; at most `max_categories` when that is positive). Everything else (a value
  below the count, one never seen, a missing value) shares one unknown slot: all of them mean "none
  of the categories the model learned". A vocabulary of at most `onehot_max` values is one-hot:
  ``<column>=<value>`` per value, then ``<column>=__unknown__``. A larger one is one feature named
  after the column holding the category's index (0 the unknown slot, 1.. the vocabulary, as a
  float), which the ``tabular-mlp`` network looks up in an embedding table of `embedding_dim` columns.
- ``top_k=k`` is the encoding before embeddings (format 1): one-hot over the `k` most frequent train
  values, no indicators, no robust scaling. Kept to read old versions and to compare against.

Typed values are what `tabular.profiling` reads (rules in `tabular.values`): float, bool or str, None
where missing. `transform_records` takes JSON values from a client: a record must hold exactly the
pipeline's columns (an absent key is an error; null is a missing value); numbers for numeric
columns, true/false (or 0/1 and the boolean strings of `tabular.values`) for boolean ones, strings
for categorical.
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

__all__ = ["UNKNOWN", "FeaturePipeline", "embedding_dim", "psi"]

UNKNOWN = "__unknown__"
MISSING_SUFFIX = "__missing"
FORMAT_VERSION = 2
HEAVY_TAIL_SKEW = 2.0
DRIFT_TOP = 20  # a categorical's drift histogram: its most frequent values, then everything else
_DECILES = np.linspace(0.1, 0.9, 9)
_KNOTS = 65
_UNIFORM_SCALE = math.sqrt(12.0)


def embedding_dim(size: int) -> int:
    """Columns of the embedding of a vocabulary of `size` values (the unknown slot included).

    ``min(50, round(1.6 * size ** 0.56))``, at least 2: fastai's rule of thumb (from fitting the
    dimensions that worked on many Kaggle tables) capped at 50 as in Guo & Berkhahn's entity
    embeddings, where the tables saturate well below 50 columns; docs/decisions.md has why.
    """
    return max(2, min(50, round(1.6 * size**0.56)))


@dataclass(frozen=True)
class _Numeric:
    column: str
    median: float
    mean: float
    std: float
    edges: tuple[float, ...]  # deciles of the train values, for reference histograms
    indicator: bool = False
    knots: tuple[float, ...] = ()  # quantile scaling when set: train quantiles at equal steps
    probs: tuple[float, ...] = ()  # the cumulative probability of each knot


@dataclass(frozen=True)
class _Boolean:
    column: str
    fill: bool
    indicator: bool = False


@dataclass(frozen=True)
class _Categorical:
    column: str
    categories: tuple[str, ...]
    embedded: bool = False

    @property
    def width(self) -> int:
        return 1 if self.embedded else len(self.categories) + 1


_Encoding = _Numeric | _Boolean | _Categorical


class FeaturePipeline:
    def __init__(self, encodings: Sequence[_Encoding]) -> None:
        self._encodings = tuple(encodings)
        self._index = {e.column: e for e in self._encodings}
        if len(self._index) != len(self._encodings):
            raise ValueError("duplicate column in feature pipeline")

    @classmethod
    def fit(
        cls,
        columns: Mapping[str, Sequence[Any]],
        kinds: Mapping[str, ColumnKind | str],
        *,
        min_count: int = 2,
        onehot_max: int = 10,
        max_categories: int = 0,
        indicators: bool = True,
        robust: bool = True,
        top_k: int | None = None,
    ) -> FeaturePipeline:
        """Learn the encoding of each column in `kinds` from `columns`, which must be the train split."""
        if top_k is not None:
            if top_k < 1:
                raise ValueError("top_k must be at least 1")
            min_count, onehot_max, max_categories, indicators, robust = 1, top_k, top_k, False, False
        if min_count < 1 or onehot_max < 0 or max_categories < 0:
            raise ValueError("min_count must be at least 1; onehot_max and max_categories at least 0")
        encodings: list[_Encoding] = []
        for name, kind in kinds.items():
            values = columns[name]
            kind = ColumnKind(kind)
            if kind is ColumnKind.NUMERIC:
                encodings.append(_fit_numeric(name, _floats(values), indicators=indicators, robust=robust))
            elif kind is ColumnKind.BOOLEAN:
                trues = sum(1 for v in values if v is True)
                falses = sum(1 for v in values if v is False)
                has_missing = indicators and any(v is None for v in values)
                encodings.append(_Boolean(name, trues > falses, has_missing))
            else:
                counts = Counter(v for v in values if v is not None)
                ranked = sorted(((v, c) for v, c in counts.items() if c >= min_count), key=lambda i: (-i[1], i[0]))
                if max_categories:
                    ranked = ranked[:max_categories]
                vocabulary = tuple(str(v) for v, _ in ranked)
                encodings.append(_Categorical(name, vocabulary, embedded=len(vocabulary) > onehot_max))
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
                if e.embedded:
                    names.append(e.column)
                else:
                    names.extend(f"{e.column}={c}" for c in (*e.categories, UNKNOWN))
            else:
                names.append(e.column)
                if e.indicator:
                    names.append(e.column + MISSING_SUFFIX)
        return names

    @property
    def n_features(self) -> int:
        return sum(_width(e) for e in self._encodings)

    @property
    def embeddings(self) -> list[dict[str, int]]:
        """Per embedded categorical, in column order: its feature position, table size (the unknown slot
        and the vocabulary) and embedding dimension, as the ``tabular-mlp`` config takes them."""
        out: list[dict[str, int]] = []
        at = 0
        for e in self._encodings:
            if isinstance(e, _Categorical) and e.embedded:
                size = len(e.categories) + 1
                out.append({"column": at, "size": size, "dim": embedding_dim(size)})
            at += _width(e)
        return out

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
                absent = np.isnan(x)
                imputed = np.where(absent, e.median, x)
                if e.knots:
                    out[:, at] = (np.interp(imputed, e.knots, e.probs) - 0.5) * _UNIFORM_SCALE
                else:
                    out[:, at] = (imputed - e.mean) / e.std
                if e.indicator:
                    out[:, at + 1] = absent
            elif isinstance(e, _Boolean):
                out[:, at] = [float(e.fill if v is None else bool(v)) for v in values]
                if e.indicator:
                    out[:, at + 1] = [v is None for v in values]
            else:
                slot = {c: i + 1 for i, c in enumerate(e.categories)}
                index = np.array([0 if v is None else slot.get(v, 0) for v in values], dtype=np.intp)
                if e.embedded:
                    out[:, at] = index
                else:
                    # One-hot puts the unknown slot last (format 1's layout).
                    hot = np.where(index == 0, len(e.categories), index - 1)
                    block = np.zeros((rows, e.width), dtype=np.float32)
                    block[np.arange(rows), hot] = 1.0
                    out[:, at : at + e.width] = block
            at += _width(e)
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
        (the `DRIFT_TOP` most frequent of the vocabulary, then ``__unknown__`` for everything else)
        and ``fractions``; boolean: categories ``false``, ``true``. Each also has ``missing``, the
        fraction of all values that were missing, and ``count``. Fitting computes them on train; the
        same call on serving traffic gives what to compare with `psi`.
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
                shown = e.categories[:DRIFT_TOP]
                categories = [*shown, UNKNOWN]
                known = Counter(v for v in values if v is not None)
                counts = [known.get(c, 0) for c in shown]
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
                        "indicator": e.indicator,
                        "scaling": "quantile" if e.knots else "standard",
                        **({"knots": list(e.knots), "probs": list(e.probs)} if e.knots else {}),
                    }
                )
            elif isinstance(e, _Boolean):
                columns.append({"name": e.column, "kind": "boolean", "fill": e.fill, "indicator": e.indicator})
            else:
                columns.append(
                    {
                        "name": e.column,
                        "kind": "categorical",
                        "categories": list(e.categories),
                        "encoding": "embedding" if e.embedded else "onehot",
                    }
                )
        return {"version": FORMAT_VERSION, "columns": columns}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a pipeline from `to_dict` output (format 1 or 2); `ArtifactError` if `data` is not one."""
        try:
            version = data["version"]
            if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
                raise ValueError(f"unsupported version {version!r}")
            encodings = [_decode(c, version) for c in data["columns"]]
            return cls(encodings)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"malformed feature pipeline: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeaturePipeline) and self._encodings == other._encodings

    def __hash__(self) -> int:
        return hash(self._encodings)

    def __repr__(self) -> str:
        return f"FeaturePipeline(columns={self.columns!r}, n_features={self.n_features})"


def _fit_numeric(name: str, x: np.ndarray, *, indicators: bool, robust: bool) -> _Numeric:
    absent = np.isnan(x)
    present = x[~absent]
    median = float(np.median(present)) if present.size else 0.0
    imputed = np.where(absent, median, x)
    mean = float(imputed.mean()) if imputed.size else 0.0
    std = float(imputed.std()) if imputed.size else 0.0
    # A constant column must not blow up to inf; centring alone makes it all zeros.
    if not std > 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    edges = tuple(float(e) for e in np.unique(np.quantile(present, _DECILES))) if present.size else ()
    knots: tuple[float, ...] = ()
    probs: tuple[float, ...] = ()
    if robust and present.size >= 20 and abs(_skewness(present)) > HEAVY_TAIL_SKEW:
        levels = np.linspace(0.0, 1.0, _KNOTS)
        quantiles = np.quantile(imputed, levels)
        # Tied quantiles (a value repeated over many rows) become one knot at their mean level.
        unique, inverse = np.unique(quantiles, return_inverse=True)
        if unique.size >= 2:
            knots = tuple(float(k) for k in unique)
            probs = tuple(float(p) for p in np.bincount(inverse, weights=levels) / np.bincount(inverse))
    return _Numeric(name, median, mean, std, edges, bool(indicators and absent.any()), knots, probs)


def _skewness(x: np.ndarray) -> float:
    centred = x - x.mean()
    var = float(np.mean(centred**2))
    return float(np.mean(centred**3)) / var**1.5 if var > 0 else 0.0


def _decode(c: Mapping[str, Any], version: int) -> _Encoding:
    name, kind = c["name"], ColumnKind(c["kind"])
    if not isinstance(name, str):
        raise TypeError("column name must be a string")
    indicator = bool(_flag(c, "indicator", name)) if version > 1 else False
    if kind is ColumnKind.NUMERIC:
        median, mean, std = (_finite(c[k]) for k in ("median", "mean", "std"))
        if std <= 0:
            raise ValueError(f"std of {name!r} must be positive")
        edges = tuple(_finite(v) for v in c["edges"])
        knots: tuple[float, ...] = ()
        probs: tuple[float, ...] = ()
        if version > 1 and c.get("scaling", "standard") == "quantile":
            knots, probs = tuple(_finite(v) for v in c["knots"]), tuple(_finite(v) for v in c["probs"])
            if len(knots) < 2 or len(knots) != len(probs) or list(knots) != sorted(set(knots)):
                raise ValueError(f"quantile knots of {name!r} must be increasing, one per level")
        elif version > 1 and c.get("scaling", "standard") != "standard":
            raise ValueError(f"unknown scaling {c['scaling']!r} of {name!r}")
        return _Numeric(name, median, mean, std, edges, indicator, knots, probs)
    if kind is ColumnKind.BOOLEAN:
        if not isinstance(c["fill"], bool):
            raise TypeError(f"fill of {name!r} must be a boolean")
        return _Boolean(name, c["fill"], indicator)
    if not all(isinstance(v, str) for v in c["categories"]):
        raise TypeError(f"categories of {name!r} must be strings")
    encoding = c.get("encoding", "onehot") if version > 1 else "onehot"
    if encoding not in ("onehot", "embedding"):
        raise ValueError(f"unknown encoding {encoding!r} of {name!r}")
    return _Categorical(name, tuple(c["categories"]), embedded=encoding == "embedding")


def _flag(c: Mapping[str, Any], key: str, name: str) -> bool:
    value = c.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} of {name!r} must be a boolean")
    return value


def _width(e: _Encoding) -> int:
    if isinstance(e, _Categorical):
        return e.width
    return 2 if e.indicator else 1


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
