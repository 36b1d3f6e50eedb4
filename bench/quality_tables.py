"""Tables for bench/training_quality.py: scikit-learn's shipped ones, and generated ones with the shapes
real tables have (high-cardinality categoricals, missing values, class imbalance, interactions, heavy tails).

Every table is written as a CSV the way a user would upload it; `TABLES` lists name -> (writer, task).
Generated tables depend on their own fixed seed only (the training seed varies the split and the
initialisation, not the data), so every seed sees the same table.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn import datasets

Writer = Callable[[Path], None]


def _write(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def _num(v: float) -> str:
    return repr(float(v))


def shipped(name: str) -> Writer:
    def write(path: Path) -> None:
        bunch = getattr(datasets, f"load_{name}")()
        rows = [[*(_num(v) for v in row), repr(t.item())] for row, t in zip(bunch.data, bunch.target, strict=True)]
        _write(path, [*bunch.feature_names, "target"], rows)

    return write


def _levels(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """Level per row with Zipf-like frequencies (a few big stores, a long tail), every level present."""
    weights = 1.0 / np.arange(1, n + 1) ** 0.7
    picks = rng.choice(n, size=rows - n, p=weights / weights.sum())
    return rng.permutation(np.concatenate([np.arange(n), picks]))


def stores(levels: int, rows: int, *, task: str = "classification", seed: int = 16) -> Writer:
    """One categorical with `levels` ids (store_0..) whose effect is most of the signal, plus 2 numeric."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        store = _levels(rng, levels, rows)
        effect = rng.normal(0.0, 1.5, levels)
        x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
        signal = effect[store] + 0.8 * x1 - 0.5 * x2
        if task == "classification":
            y: list[object] = ["yes" if s + rng.normal(0, 0.5) > 0 else "no" for s in signal]
        else:
            y = [_num(s + rng.normal(0, 0.5)) for s in signal]
        data = [[f"store_{s}", _num(a), _num(b), t] for s, a, b, t in zip(store, x1, x2, y, strict=True)]
        _write(path, ["store", "x1", "x2", "target"], data)

    return write


def missing(rows: int = 4000, fraction: float = 0.3, seed: int = 17) -> Writer:
    """Regression, 6 numeric features, `fraction` of each missing; one column's absence is informative."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(rows, 6))
        y = x[:, 0] + 0.8 * x[:, 1] - 0.6 * x[:, 2] + 0.5 * x[:, 3] * x[:, 4] + rng.normal(0, 0.5, rows)
        gone = rng.random((rows, 6)) < fraction
        gone[:, 5] = x[:, 0] > 0.6  # missing not at random: absent when x0 is high
        y += np.where(gone[:, 5], 0.7, 0.0)
        data = [[None if g else _num(v) for v, g in zip(r, m, strict=True)] + [_num(t)]
                for r, m, t in zip(x, gone, y, strict=True)]
        _write(path, [f"f{i}" for i in range(6)] + ["target"], data)

    return write


def imbalance(rows: int = 6000, minority: float = 0.02, seed: int = 18) -> Writer:
    """Classification, 8 numeric features, the positive class `minority` of the rows."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(rows, 8))
        score = 1.5 * x[:, 0] + x[:, 1] - x[:, 2] + 0.5 * x[:, 3] * x[:, 4] + rng.normal(0, 0.7, rows)
        cut = np.quantile(score, 1 - minority)
        data = [[*(_num(v) for v in r), "1" if s > cut else "0"] for r, s in zip(x, score, strict=True)]
        _write(path, [f"f{i}" for i in range(8)] + ["target"], data)

    return write


def interactions(rows: int = 4000, seed: int = 19) -> Writer:
    """Classification from products and a XOR of signs; a categorical that switches a feature's sign."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(rows, 5))
        group = rng.choice(["a", "b", "c", "d"], size=rows)
        sign = np.where(np.isin(group, ["a", "c"]), 1.0, -1.0)
        score = 1.2 * x[:, 0] * x[:, 1] + np.sign(x[:, 2] * x[:, 3]) + sign * x[:, 4] + rng.normal(0, 0.4, rows)
        data = [[*(_num(v) for v in r), g, "1" if s > 0 else "0"] for r, g, s in zip(x, group, score, strict=True)]
        _write(path, [f"f{i}" for i in range(5)] + ["group", "target"], data)

    return write


def heavy_tail(rows: int = 4000, seed: int = 20) -> Writer:
    """Regression on lognormal and Pareto features (heavy right tails) with Student-t(3) noise."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        a = rng.lognormal(0.0, 1.5, rows)
        b = rng.pareto(1.5, rows) + 1.0
        c = rng.normal(size=rows)
        y = 2.0 * np.log(a) + 1.5 * np.log(b) + c + 0.5 * rng.standard_t(3, rows)
        data = [[_num(u), _num(v), _num(w), _num(t)] for u, v, w, t in zip(a, b, c, y, strict=True)]
        _write(path, ["income", "spend", "score", "target"], data)

    return write


TABLES: dict[str, tuple[Writer, str]] = {
    "digits": (shipped("digits"), "classification"),
    "breast_cancer": (shipped("breast_cancer"), "classification"),
    "wine": (shipped("wine"), "classification"),
    "diabetes": (shipped("diabetes"), "regression"),
    "stores_50_regr": (stores(50, 3000, task="regression"), "regression"),
    "stores_150": (stores(150, 5000), "classification"),
    "stores_1000": (stores(1000, 10000, seed=21), "classification"),
    "missing_30": (missing(), "regression"),
    "imbalance_2pct": (imbalance(), "classification"),
    "interactions": (interactions(), "classification"),
    "heavy_tail_regr": (heavy_tail(), "regression"),
}
