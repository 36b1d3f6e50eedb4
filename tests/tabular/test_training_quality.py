"""Quality floor: Torchwire's default tabular training against scikit-learn's MLP defaults.

Each data set goes through a CSV file, `profile_csv`, `read_columns` and `train_tabular` with the
service's default hyperparameters. scikit-learn then trains on exactly the same train + validation
rows (it holds out its own validation), encoded by the same fitted pipeline (so both see the same
standardised features), and both are scored on the same test rows. bench/training_quality.py
compares against gradient boosting too, on more tables.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn import datasets
from sklearn.neural_network import MLPClassifier, MLPRegressor

from tabular.features import FeaturePipeline
from tabular.profiling import profile_csv, read_columns
from tabular.training import Hyperparameters, split_rows, train_tabular

ACCURACY_MARGIN = 0.02
R2_MARGIN = 0.05


def export(name: str, path: Path) -> None:
    bunch = getattr(datasets, f"load_{name}")()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*bunch.feature_names, "target"])
        for row, target in zip(bunch.data, bunch.target, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), repr(target.item())])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    ("name", "task"),
    [
        pytest.param("digits", "classification", marks=pytest.mark.slow),
        ("breast_cancer", "classification"),
        ("wine", "classification"),
        ("diabetes", "regression"),
    ],
)
def test_default_training_is_no_worse_than_scikit_learn(tmp_path: Path, name: str, task: str) -> None:
    path = tmp_path / f"{name}.csv"
    export(name, path)
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    result = train_tabular(columns, profile, target="target", task=task)

    defaults = Hyperparameters()
    split = split_rows(columns["target"], task=task, val_fraction=defaults.val_fraction,
                       test_fraction=defaults.test_fraction, seed=defaults.seed)
    assert (len(split.train), len(split.val), len(split.test)) == (
        result.metrics["train_rows"], result.metrics["val_rows"], result.metrics["test_rows"])
    train, val = np.sort(np.concatenate([split.train, split.val])), split.test
    x = FeaturePipeline.from_dict(result.pipeline).transform_columns(columns)
    y = np.array(columns["target"])
    if task == "classification":
        theirs = MLPClassifier(random_state=defaults.seed).fit(x[train], y[train]).score(x[val], y[val])
        ours = result.metrics["accuracy"]
        # A floor cannot be finer than one test row (wine has 27: one row is 3.7 points).
        margin = max(ACCURACY_MARGIN, 1 / len(val))
    else:
        raw = MLPRegressor(random_state=defaults.seed).fit(x[train], y[train]).score(x[val], y[val])
        # Defaults on the raw target do not converge on diabetes (R² < 0); the standardised target
        # that ours trains on internally is the comparison that means something.
        mean, std = y[train].mean(), y[train].std()
        scaled = MLPRegressor(random_state=defaults.seed).fit(x[train], (y[train] - mean) / std)
        theirs = max(raw, scaled.score(x[val], (y[val] - mean) / std))
        ours = result.metrics["r2"]
        margin = R2_MARGIN
    assert ours >= theirs - margin, f"{name}: ours {ours:.4f}, scikit-learn {theirs:.4f}"
