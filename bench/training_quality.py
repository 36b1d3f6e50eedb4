"""Tabular training quality: Torchwire's defaults against scikit-learn's MLP defaults.

For each of scikit-learn's bundled ``digits``, ``breast_cancer``, ``wine`` (classification) and
``diabetes`` (regression): export to CSV, then `profile_csv` -> `read_columns` -> `train_tabular`
with the service's default hyperparameters, exactly as a training job does. scikit-learn's
``MLPClassifier()`` / ``MLPRegressor()`` (defaults, ``random_state`` = the same seed) then fit the
same train rows, encoded by the same fitted pipeline, and both are scored on the same validation
rows: accuracy for classification, R² for regression.

    .venv/bin/python bench/training_quality.py [--seeds 0 1 2 3 4] [--markdown bench/TRAINING.md]

Seed 0 is what tests/tabular/test_training_quality.py asserts; more seeds show the spread.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

try:
    from tabular import training
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tabular import training
from tabular.features import FeaturePipeline
from tabular.profiling import profile_csv, read_columns

DATASETS = (
    ("digits", "classification"),
    ("breast_cancer", "classification"),
    ("wine", "classification"),
    ("diabetes", "regression"),
)


def export(name: str, path: Path) -> None:
    bunch = getattr(datasets, f"load_{name}")()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*bunch.feature_names, "target"])
        for row, target in zip(bunch.data, bunch.target, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), repr(target.item())])


def compare(path: Path, name: str, task: str, seed: int) -> dict[str, Any]:
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    started = time.perf_counter()
    result = training.train_tabular(columns, profile, target="target", task=task, hyperparameters={"seed": seed})
    ours_s = time.perf_counter() - started

    train, val = training.split_rows(
        columns["target"], task=task, val_fraction=training.Hyperparameters().val_fraction, seed=seed
    )
    x = FeaturePipeline.from_dict(result.pipeline).transform_columns(columns)
    y = np.array(columns["target"])
    model = MLPClassifier(random_state=seed) if task == "classification" else MLPRegressor(random_state=seed)
    scaled: float | None = None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[train], y[train])
        theirs_s = time.perf_counter() - started
        if task == "regression":
            mean, std = y[train].mean(), y[train].std()
            on_scaled = MLPRegressor(random_state=seed).fit(x[train], (y[train] - mean) / std)
            scaled = float(on_scaled.score(x[val], (y[val] - mean) / std))
    metric = "accuracy" if task == "classification" else "r2"
    return {
        "dataset": name,
        "seed": seed,
        "rows": profile.rows,
        "features": len(result.features),
        "val_rows": len(val),
        "metric": metric,
        "ours": result.metrics[metric],
        "sklearn": float(model.score(x[val], y[val])),
        "sklearn_scaled_y": scaled,
        "ours_s": ours_s,
        "sklearn_s": theirs_s,
        "epochs": result.epochs_run,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--markdown", type=Path, help="write the report here (e.g. bench/TRAINING.md)")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, task in DATASETS:
            path = Path(tmp) / f"{name}.csv"
            export(name, path)
            for seed in args.seeds:
                results.append(compare(path, name, task, seed))
                print(_row(results[-1]), flush=True)
    report = render(results, args.seeds)
    print()
    print(report)
    if args.markdown:
        args.markdown.write_text(report)


def _theirs(r: dict[str, Any]) -> float:
    """The better scikit-learn score, as the test compares against."""
    return max(r["sklearn"], r["sklearn_scaled_y"]) if r["sklearn_scaled_y"] is not None else r["sklearn"]


def _delta(r: dict[str, Any]) -> float:
    scale = 100.0 if r["metric"] == "accuracy" else 1.0
    return (r["ours"] - _theirs(r)) * scale


def _fmt(r: dict[str, Any], key: str) -> str:
    if r[key] is None:
        return "-"
    return f"{r[key] * 100:.2f}%" if r["metric"] == "accuracy" else f"{r[key]:.4f}"


def _row(r: dict[str, Any]) -> str:
    unit = " pts" if r["metric"] == "accuracy" else ""
    return (
        f"| {r['dataset']} | {r['rows']} | {r['features']} | {r['val_rows']} | {r['metric']} | {_fmt(r, 'ours')} | "
        f"{_fmt(r, 'sklearn')} | {_fmt(r, 'sklearn_scaled_y')} | {_delta(r):+.2f}{unit} | "
        f"{r['ours_s']:.2f} s ({r['epochs']} ep) | {r['sklearn_s']:.2f} s |"
    )


def render(results: list[dict[str, Any]], seeds: list[int]) -> str:
    hp = training.Hyperparameters()
    lines = [
        "# Tabular training quality",
        "",
        "Generated by `bench/training_quality.py`; see its docstring for the method. Torchwire trains with the",
        f"service defaults (hidden {list(hp.hidden)}, dropout {hp.dropout}, lr {hp.lr}, weight_decay "
        f"{hp.weight_decay}, batch_size {hp.batch_size}, epochs {hp.epochs}, patience {hp.patience}, "
        f"val_fraction {hp.val_fraction});",
        "scikit-learn trains `MLPClassifier()` / `MLPRegressor()` with their defaults (hidden (100,), adam lr 1e-3,",
        "alpha 1e-4, 200 iterations) on the same train rows and the same standardised features. Both are",
        "scored on the same validation rows. Delta is ours minus the better scikit-learn score: accuracy",
        "points, or R².",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}. Times are wall-clock training only",
        "(ours includes the first-use cost of torch's optimizer, about a second, on the first data set).",
        "",
        f"## Seed {seeds[0]} (what `tests/tabular/test_training_quality.py` asserts)",
        "",
        "| dataset | rows | features | val rows | metric | ours | sklearn | sklearn, y standardised | delta "
        "| ours: time | sklearn: time |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        *(_row(r) for r in results if r["seed"] == seeds[0]),
        "",
    ]
    if len(seeds) > 1:
        lines += [
            f"## Spread over seeds {', '.join(map(str, seeds))}",
            "",
            "| dataset | mean delta | worst delta | best delta |",
            "|---|---:|---:|---:|",
        ]
        for name, _ in DATASETS:
            deltas = [_delta(r) for r in results if r["dataset"] == name]
            lines.append(f"| {name} | {statistics.mean(deltas):+.2f} | {min(deltas):+.2f} | {max(deltas):+.2f} |")
        lines.append("")
    lines += [
        "## Notes",
        "",
        "- The floor the test asserts: ours >= scikit-learn - 2 accuracy points (never finer than one validation",
        "  row: wine has 36, so one row is 2.8 points), or - 0.05 R².",
        "- Our metrics are on the validation split that early stopping also used to pick the epoch, so they",
        "  lean slightly optimistic; scikit-learn's did not see those rows at all.",
        "- diabetes: fed the raw target (25-346), scikit-learn's regressor does not converge in its 200",
        "  iterations, hence its negative R². Ours standardises the target internally, so the column",
        "  'sklearn, y standardised' (its time not included) trains it on the same standardised target; the",
        "  delta and the test use the better of the two. A linear regression on these features scores 0.52",
        "  R² on the seed-0 split: this data set has little more to give.",
        "- Every feature is written as a float literal (``0.0``), as pandas writes a float array, so no",
        "  pixel column of digits reads as boolean; the targets are integers (breast_cancer's 0/1 is boolean).",
        "- Defaults: hidden [128, 64], lr 2e-3 and dropout 0.1 were chosen over hidden [64, 64], lr 1e-3, no",
        "  dropout after running both over seeds 0-12 with this script: the smaller network trailed",
        "  scikit-learn on digits by 0.5 points on average (worst -1.95, at the edge of the floor) and lost a",
        "  wine row in 4 of 13 seeds; the chosen one led by 0.4 on average (worst -0.28) and lost a wine row",
        "  in 1 of 13. breast_cancer and diabetes barely move.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
