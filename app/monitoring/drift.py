"""Drift of recorded traffic against a version's training reference, and summaries of predictions.

Pure functions over plain values (no Django). Numeric features are binned by the reference's own
edges (train deciles) and categorical or boolean ones by category, both through
`FeaturePipeline.reference_stats`, so serving traffic is histogrammed exactly as the train split was.
Each histogram gets one more bin for missing values, so a feature that starts arriving null drifts
too; `tabular.features.psi` compares the two.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tabular.features import FeaturePipeline, psi
from tabular.values import ColumnKind, from_json_lenient

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def typed_columns(records: Sequence[Mapping[str, Any]], kinds: Mapping[str, ColumnKind]) -> dict[str, list[Any]]:
    """The typed values `FeaturePipeline.reference_stats` takes, from records the pipeline accepted at
    request time (so no error is possible; anything unexpected counts as missing)."""
    columns: dict[str, list[Any]] = {name: [] for name in kinds}
    for record in records:
        for name, kind in kinds.items():
            columns[name].append(from_json_lenient(kind, record.get(name)))
    return columns


def _with_missing(stats: Mapping[str, Any]) -> list[float]:
    missing = float(stats.get("missing", 0.0))
    return [float(f) * (1.0 - missing) for f in stats["fractions"]] + [missing]


def _bin_labels(stats: Mapping[str, Any]) -> list[str]:
    if "categories" in stats:
        return [str(c) for c in stats["categories"]]
    edges = [float(e) for e in stats.get("edges", [])]
    if not edges:
        return ["all"]
    labels = [f"<= {edges[0]:g}"]
    labels += [f"({low:g}, {high:g}]" for low, high in itertools.pairwise(edges)]
    labels.append(f"> {edges[-1]:g}")
    return labels


def _round(values: Sequence[float]) -> list[float]:
    return [round(v, 6) for v in values]


def feature_drift(
    *,
    pipeline: FeaturePipeline,
    reference: Mapping[str, Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    threshold: float,
) -> list[dict[str, Any]]:
    """PSI per input column of ``pipeline`` that ``reference`` (the version's ``reference_stats``) covers,
    in pipeline order. A feature drifts when its PSI is past ``threshold``."""
    current = pipeline.reference_stats(typed_columns(records, pipeline.kinds))
    out: list[dict[str, Any]] = []
    for name in pipeline.columns:
        ref = reference.get(name)
        if ref is None:
            continue
        expected, actual = _with_missing(ref), _with_missing(current[name])
        value = psi(expected, actual)
        out.append({
            "feature": name,
            "kind": ref.get("kind", str(pipeline.kinds[name])),
            "psi": round(value, 6),
            "drifted": value > threshold,
            "bins": [*_bin_labels(ref), "missing"],
            "reference": _round(expected),
            "current": _round(actual),
        })
    return out


def classification_summary(
    *, counts: Mapping[str, int], labels: Sequence[str], reference: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Class fractions of the predictions, in the version's label order (then any others). Compared with
    the training target's distribution when ``reference`` (a categorical histogram) is given."""
    total = sum(counts.values())
    order = [*labels, *sorted(set(counts) - set(labels))]
    summary: dict[str, Any] = {
        "task": "classification",
        "count": total,
        "fractions": {label: round(counts.get(label, 0) / total, 6) if total else 0.0 for label in order},
        "psi": None,
    }
    if reference is not None and "categories" in reference and total:
        categories = [str(c) for c in reference["categories"]]
        known = {c: i for i, c in enumerate(categories)}
        actual = [0.0] * len(categories)
        for label, count in counts.items():
            actual[known.get(label, len(categories) - 1)] += count / total
        summary["psi"] = round(psi([float(f) for f in reference["fractions"]], actual), 6)
    return summary


def regression_summary(*, values: np.ndarray, reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """Count, moments, quantiles and a 10-bin histogram of predicted values; compared with the training
    target's histogram when ``reference`` (a numeric one, with ``edges``) is given."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    summary: dict[str, Any] = {"task": "regression", "count": int(values.size), "psi": None}
    if not values.size:
        return summary
    counts, edges = np.histogram(values, bins=10)
    summary.update({
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std()), 6),
        "min": round(float(values.min()), 6),
        "max": round(float(values.max()), 6),
        "quantiles": {f"p{round(q * 100):02d}": round(float(np.quantile(values, q)), 6) for q in QUANTILES},
        "histogram": {"edges": _round(edges.tolist()), "counts": counts.tolist()},
    })
    if reference is not None and "edges" in reference:
        ref_edges = np.asarray(reference["edges"], dtype=np.float64)
        binned = np.bincount(np.searchsorted(ref_edges, values, side="left"), minlength=ref_edges.size + 1)
        summary["psi"] = round(psi([float(f) for f in reference["fractions"]], binned.tolist()), 6)
    return summary
