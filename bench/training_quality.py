"""Tabular training quality: Torchwire's defaults against scikit-learn's HistGradientBoosting and MLP.

For each table of `bench/quality_tables.py` (scikit-learn's shipped digits, breast_cancer, wine,
diabetes, and generated ones: high-cardinality categoricals, missing values, class imbalance,
interactions, heavy tails): write the CSV, then `profile_csv` -> `read_columns` -> `train_tabular`
with the service's default hyperparameters, exactly as a training job does. Its metrics are scored
on the test split, which chose nothing.

scikit-learn gets the same split: it fits on train + validation rows (it holds out its own
validation where it early-stops) and is scored on the same test rows:

- ``HistGradientBoostingClassifier/Regressor(random_state=seed)``, defaults, with native categorical
  support: each categorical column as ordinal codes of its fit-row values (most frequent first; the
  254 most frequent, as its 255 bins allow, the rest one shared code), unseen or missing as NaN,
  numbers raw with NaN where missing.
- ``MLPClassifier/MLPRegressor(random_state=seed)``, defaults, on a feature pipeline fitted on its fit
  rows with every categorical one-hot over its full vocabulary (standardised numbers, missing
  indicators); regression on the standardised target (its own raw-target fit does not converge).

Accuracy for classification, R² for regression. Floors (bench/TRAINING.md): ours within 1 accuracy
point (0.02 R²) of gradient boosting on every table, mean over seeds; stores_150 within 2.

    .venv/bin/python bench/training_quality.py [--seeds 3] [--tables stores_150 wine] [--threads 1] \
        [--markdown bench/TRAINING.md]

``--seeds N`` runs seeds 0..N-1. The machine's load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_tables import TABLES  # a sibling script of this one, not a package

try:
    from tabular import training
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tabular import training
from tabular.features import FeaturePipeline
from tabular.profiling import DatasetProfile, profile_csv, read_columns
from tabular.values import ColumnKind

HGB_MAX_CODES = 254
FLOOR = {"accuracy": 1.0, "r2": 0.02}
FLOOR_150 = 2.0


def hgb_matrix(
    columns: dict[str, list[Any]], profile: DatasetProfile, names: list[str], fit_rows: np.ndarray
) -> tuple[np.ndarray, list[bool]]:
    out = np.empty((len(columns[names[0]]), len(names)), dtype=np.float64)
    categorical: list[bool] = []
    for j, name in enumerate(names):
        values = columns[name]
        kind = profile.column(name).kind
        if kind is ColumnKind.CATEGORICAL:
            counts = Counter(values[i] for i in fit_rows.tolist() if values[i] is not None)
            ranked = [v for v, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
            codes = {v: min(i, HGB_MAX_CODES) for i, v in enumerate(ranked)}
            out[:, j] = [np.nan if v is None or v not in codes else codes[v] for v in values]
            categorical.append(True)
        else:
            out[:, j] = [np.nan if v is None else float(v) for v in values]
            categorical.append(False)
    return out, categorical


def compare(path: Path, name: str, task: str, seed: int) -> dict[str, Any]:
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    started = time.perf_counter()
    result = training.train_tabular(columns, profile, target="target", task=task, hyperparameters={"seed": seed})
    ours_s = time.perf_counter() - started

    hp = training.Hyperparameters()
    split = training.split_rows(
        columns["target"], task=task, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction, seed=seed
    )
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    test = split.test
    names = list(result.features)
    y_raw = columns["target"]
    if task == "classification":
        y = np.array([str(v) for v in y_raw], dtype=object)
    else:
        y = np.array([np.nan if v is None else float(v) for v in y_raw])
    metric = "accuracy" if task == "classification" else "r2"

    x_hgb, categorical = hgb_matrix(columns, profile, names, fit_rows)
    hgb: Any = (HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor)(
        random_state=seed, categorical_features=categorical if any(categorical) else None
    )
    started = time.perf_counter()
    hgb.fit(x_hgb[fit_rows], y[fit_rows])
    hgb_s = time.perf_counter() - started
    hgb_score = float(hgb.score(x_hgb[test], y[test]))

    fit_columns = {n: [columns[n][i] for i in fit_rows.tolist()] for n in names}
    pipeline = FeaturePipeline.fit(fit_columns, {n: profile.column(n).kind for n in names}, onehot_max=1000)
    x_mlp = pipeline.transform_columns({n: columns[n] for n in names})
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task == "classification":
            mlp_score = float(MLPClassifier(random_state=seed).fit(x_mlp[fit_rows], y[fit_rows]).score(
                x_mlp[test], y[test]))
        else:
            mean, std = float(y[fit_rows].mean()), float(y[fit_rows].std()) or 1.0
            model = MLPRegressor(random_state=seed).fit(x_mlp[fit_rows], (y[fit_rows] - mean) / std)
            mlp_score = float(model.score(x_mlp[test], (y[test] - mean) / std))
    mlp_s = time.perf_counter() - started
    return {
        "table": name,
        "seed": seed,
        "rows": profile.rows,
        "columns": len(names),
        "test_rows": len(test),
        "metric": metric,
        "ours": float(result.metrics[metric]),
        "hgb": hgb_score,
        "mlp": mlp_score,
        "ours_s": ours_s,
        "hgb_s": hgb_s,
        "mlp_s": mlp_s,
        "epochs": result.epochs_run,
        "embedded": len(result.config.get("embeddings", [])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1 (default 3)")
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument("--markdown", type=Path, help="write the report here (e.g. bench/TRAINING.md)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared, loaded machine more threads only contend)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seeds = list(range(args.seeds))
    load_start = os.getloadavg()
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            write, task = TABLES[name]
            path = Path(tmp) / f"{name}.csv"
            write(path)
            for seed in seeds:
                results.append(compare(path, name, task, seed))
                print(_row(results[-1]), flush=True)
    loads = (load_start, os.getloadavg())
    report = render(results, seeds, args.tables, loads, time.perf_counter() - started)
    print()
    print(report)
    if args.markdown:
        args.markdown.write_text(report)


def _scale(metric: str) -> float:
    return 100.0 if metric == "accuracy" else 1.0


def _fmt(metric: str, value: float) -> str:
    return f"{value * 100:.2f}%" if metric == "accuracy" else f"{value:.4f}"


def _row(r: dict[str, Any]) -> str:
    delta = (r["ours"] - r["hgb"]) * _scale(r["metric"])
    return (
        f"| {r['table']} | {r['seed']} | {r['rows']} | {r['test_rows']} | {r['metric']} | "
        f"{_fmt(r['metric'], r['ours'])} ({r['ours_s']:.1f} s, {r['epochs']} ep) | "
        f"{_fmt(r['metric'], r['hgb'])} ({r['hgb_s']:.1f} s) | {_fmt(r['metric'], r['mlp'])} ({r['mlp_s']:.1f} s) | "
        f"{delta:+.2f} |"
    )


def summary(results: list[dict[str, Any]], tables: list[str]) -> list[str]:
    lines = [
        "| table | rows | metric | ours (mean) | ours: time | gradient boosting | time | sklearn MLP | time "
        "| ours - GB (worst seed) | floor | met |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in tables:
        rs = [r for r in results if r["table"] == name]
        if not rs:
            continue
        metric = rs[0]["metric"]
        scale = _scale(metric)

        def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.mean(r[key] for r in rs)

        deltas = [(r["ours"] - r["hgb"]) * scale for r in rs]
        floor = FLOOR_150 if name == "stores_150" else FLOOR[metric]
        met = statistics.mean(deltas) >= -floor
        unit = " pts" if metric == "accuracy" else ""
        lines.append(
            f"| {name} | {rs[0]['rows']} | {metric} | {_fmt(metric, mean('ours'))} | {mean('ours_s'):.1f} s | "
            f"{_fmt(metric, mean('hgb'))} | {mean('hgb_s'):.1f} s | {_fmt(metric, mean('mlp'))} | "
            f"{mean('mlp_s'):.1f} s | {statistics.mean(deltas):+.2f}{unit} ({min(deltas):+.2f}) | "
            f"-{floor:g}{unit} | {'yes' if met else '**no**'} |"
        )
    return lines


def render(
    results: list[dict[str, Any]],
    seeds: list[int],
    tables: list[str],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    total_s: float,
) -> str:
    hp = training.Hyperparameters()
    return "\n".join(
        [
            "# Tabular training quality",
            "",
            "Generated by `bench/training_quality.py` (its docstring has the method; the tables are in",
            "`bench/quality_tables.py`). Torchwire trains with the service defaults (hidden "
            f"{list(hp.hidden)}, dropout {hp.dropout}, lr {hp.lr}, weight_decay {hp.weight_decay}, batch_size "
            f"{hp.batch_size}, epochs {hp.epochs}, patience {hp.patience}, val_fraction {hp.val_fraction}, "
            f"test_fraction {hp.test_fraction}, min_count {hp.min_count}, onehot_max {hp.onehot_max}) and is scored",
            "on its test split; scikit-learn fits the same train + validation rows and is scored on the same",
            "test rows. Times are wall-clock training only.",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work, torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, Python {platform.python_version()}. Load average (1, 5, 15 min) "
            f"at start {_load(loads[0])}, at end {_load(loads[1])}; the whole run took {total_s / 60:.1f} min. "
            "Times under that load are slower than on a quiet machine, for every model alike.",
            "",
            f"## Mean over seeds {', '.join(map(str, seeds))}",
            "",
            *summary(results, tables),
            "",
            "## Every run",
            "",
            "| table | seed | rows | test rows | metric | ours | gradient boosting | sklearn MLP | ours - GB |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
            *(_row(r) for r in results),
            "",
            *NOTES,
        ]
    )


NOTES = [
    "## Notes",
    "",
    "- Floors: the mean over seeds of ours minus gradient boosting must be at least -1 accuracy point",
    "  (-0.02 R²) on every table, -2 points on stores_150. 'met' says whether this run met it; a 'no' is a",
    "  miss, not noise to be argued away. On the small shipped tables one test row is worth more than the",
    "  floor (wine: 27 test rows, 3.7 points a row; breast_cancer: 86, 1.2 points), so a single seed there",
    "  can only land on whole rows; the mean over seeds is what the floor is about.",
    "- stores_1000: HistGradientBoosting's native categorical support takes at most 255 bins, so the 254",
    "  most frequent stores get their own code and the rest share one; that, not the model, is most of its",
    "  gap there. One-hot over all 1,000 stores is what scikit-learn's MLP gets.",
    "- tests/tabular/test_training_quality.py asserts the shipped tables against scikit-learn's MLP on",
    "  seed 0 (2 points or one test row, 0.05 R²); tests/jobs/test_training_embeddings.py asserts, through",
    "  the API, that embeddings beat the old one-hot-top-20 encoding on a 150-level table by 8 points.",
    "- The tables, their sizes and what each tests are in bench/quality_tables.py.",
    "",
]


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
