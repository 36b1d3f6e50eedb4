from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from sklearn import metrics as skm

from inference import architectures
from inference.errors import InputError
from tabular import training
from tabular.features import FeaturePipeline
from tabular.profiling import DatasetProfile, profile_csv, read_columns
from tabular.training import (
    EpochReport,
    Hyperparameters,
    TrainingCancelled,
    TrainingError,
    classification_metrics,
    predict_records,
    regression_metrics,
    split_rows,
    train_tabular,
)

FAST = {"epochs": 30, "patience": 30, "hidden": [16]}


def make_csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """x1, x2 numeric (x2 sometimes missing), colour categorical, member boolean; two targets:
    `kind` (class: a clean function of the features, some rows missing) and `price` (linear)."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x1", "x2", "colour", "member", "kind", "price"])
        for i in range(rows):
            x1, x2 = rng.normal(), rng.normal()
            colour = rng.choice(["red", "green", "blue"])
            member = bool(rng.random() < 0.5)
            score = x1 + (1.5 if colour == "red" else -0.5) + (0.8 if member else 0)
            kind = "" if i % 25 == 0 else ("high" if score > 0.3 else "low")
            price = 3 * x1 - 2 * x2 + (5 if member else 0) + 100 + rng.normal(0, 0.1)
            writer.writerow(
                [
                    f"{x1:.6f}",
                    "" if i % 10 == 0 else f"{x2:.6f}",
                    colour,
                    "yes" if member else "no",
                    kind,
                    f"{price:.4f}",
                ]
            )
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetProfile, dict[str, list[Any]]]:
    path = make_csv(tmp_path_factory.mktemp("train") / "data.csv")
    profile = profile_csv(path)
    return profile, read_columns(path, profile, profile.names)


FEATURES = ["x1", "x2", "colour", "member"]


def test_classification_end_to_end(dataset: tuple[DatasetProfile, dict[str, list[Any]]]) -> None:
    profile, columns = dataset
    reports: list[EpochReport] = []
    result = train_tabular(
        columns, profile, target="kind", task="classification", features=FEATURES, on_epoch=reports.append
    )
    assert result.labels == ["high", "low"]
    assert result.architecture == "tabular-mlp"
    assert result.features == FEATURES
    m = result.metrics
    assert m["dropped_rows"] == 12  # every 25th row has no target
    assert m["train_rows"] + m["val_rows"] + m["test_rows"] == 288
    assert m["val_rows"] == pytest.approx(43, abs=1) and m["test_rows"] == pytest.approx(43, abs=1)
    assert m["scored_on"] == "test" and 0.9 < m["val_metric"] <= 1.0
    assert m["accuracy"] > 0.9 and m["macro_f1"] > 0.9 and m["roc_auc"] > 0.95
    assert set(result.reference_stats) == set(FEATURES)
    json.dumps(result.to_dict())

    assert [r.epoch for r in reports] == list(range(1, result.epochs_run + 1))
    assert all(r.epochs == 200 and r.metric_name == "accuracy" for r in reports)
    assert all(r.eta_s >= 0 for r in reports)
    assert all(a.elapsed_s <= b.elapsed_s for a, b in itertools.pairwise(reports))
    assert reports[-1].best_epoch == result.best_epoch
    assert result.signature == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, result.config["in_features"]]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}],
    }

    pipeline = FeaturePipeline.from_dict(result.pipeline)
    module = architectures.build(result.architecture, result.config)
    module.load_state_dict(result.state_dict)
    records: list[dict[str, Any]] = [
        {"x1": 2.0, "x2": None, "colour": "red", "member": True},
        {"x1": -2.0, "x2": 0.1, "colour": "blue", "member": False},
        {"x1": 0.0, "x2": 0.0, "colour": "purple", "member": None},
    ]
    predictions = predict_records(module, pipeline, result.labels, result.task, records)
    assert [p["label"] for p in predictions[:2]] == ["high", "low"]
    for p in predictions:
        assert set(p["probabilities"]) == {"high", "low"}
        assert sum(p["probabilities"].values()) == pytest.approx(1)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    with pytest.raises(InputError, match="unknown column") as info:
        predict_records(module, pipeline, result.labels, result.task, [{**records[0], "kind": "high"}])
    assert info.value.input_name == "kind"


def test_regression_serves_on_the_target_scale(
    dataset: tuple[DatasetProfile, dict[str, list[Any]]], tmp_path: Path
) -> None:
    profile, columns = dataset
    result = train_tabular(
        columns, profile, target="price", task="regression", features=FEATURES, hyperparameters={"lr": 0.01}
    )
    assert result.labels == []
    assert result.config["out_features"] == 1
    assert result.metrics["r2"] > 0.95 and result.metrics["rmse"] < 1.0 and result.metrics["dropped_rows"] == 0

    # Through a safetensors file, as the service stores it.
    safetensors.torch.save_file(result.state_dict, tmp_path / "m.safetensors")
    module = architectures.build("tabular-mlp", result.config)
    module.load_state_dict(safetensors.torch.load_file(tmp_path / "m.safetensors"))
    pipeline = FeaturePipeline.from_dict(result.pipeline)
    [low, high] = predict_records(
        module,
        pipeline,
        [],
        "regression",
        [
            {"x1": 0.0, "x2": 0.0, "colour": "red", "member": False},
            {"x1": 0.0, "x2": 0.0, "colour": "red", "member": True},
        ],
    )
    assert low["value"] == pytest.approx(100, abs=1.0)
    assert high["value"] - low["value"] == pytest.approx(5, abs=1.0)


def test_boolean_and_numeric_targets_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rng = np.random.default_rng(3)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "ok", "grade"])
        for _ in range(60):
            x = rng.normal()
            writer.writerow([x, "Yes" if x > 0 else "No", 3 if x > 0.5 else (10 if x < -0.5 else 1)])
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    ok = train_tabular(columns, profile, target="ok", task="classification", features=["x"], hyperparameters=FAST)
    assert ok.labels == ["No", "Yes"]
    grade = train_tabular(columns, profile, target="grade", task="classification", features=["x"], hyperparameters=FAST)
    assert grade.labels == ["1", "3", "10"]


def test_same_seed_same_weights_other_seed_other_weights(
    dataset: tuple[DatasetProfile, dict[str, list[Any]]],
) -> None:
    profile, columns = dataset
    hp = {**FAST, "epochs": 5, "dropout": 0.2}

    def train(seed: int) -> dict[str, torch.Tensor]:
        return train_tabular(
            columns, profile, target="kind", task="classification", hyperparameters={**hp, "seed": seed}
        ).state_dict

    before = torch.random.get_rng_state()
    a, b, c = train(7), train(7), train(8)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cancellation_is_checked_every_epoch(dataset: tuple[DatasetProfile, dict[str, list[Any]]]) -> None:
    profile, columns = dataset
    reports: list[EpochReport] = []
    with pytest.raises(TrainingCancelled) as info:
        train_tabular(
            columns,
            profile,
            target="kind",
            task="classification",
            on_epoch=reports.append,
            should_cancel=lambda: len(reports) >= 3,
        )
    assert info.value.epochs_completed == 3 and len(reports) == 3
    assert info.value.to_dict()["code"] == "training_cancelled"


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    # Pure noise: validation loss bottoms out early, then the model overfits.
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"f{i}" for i in range(10)), "y"])
        for _ in range(200):
            writer.writerow([*rng.normal(size=10), rng.choice(["a", "b"])])
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    result = train_tabular(
        columns, profile, target="y", task="classification", hyperparameters={"patience": 5, "lr": 0.01}
    )
    history = result.history
    assert result.epochs_run == len(history) < 200
    assert result.metrics["stopped_early"] is True
    assert result.epochs_run - result.best_epoch == 5
    best = min(history, key=lambda h: h["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.metrics["val_loss"] == best["val_loss"]
    # The returned weights are the best epoch's: their validation loss is the best one.
    module = architectures.build("tabular-mlp", result.config).eval()
    module.load_state_dict(result.state_dict)
    pipeline = FeaturePipeline.from_dict(result.pipeline)
    val_rows = split_rows(columns["y"], task="classification", val_fraction=0.15, test_fraction=0.15, seed=0).val
    x = torch.from_numpy(pipeline.transform_columns({k: [columns[k][i] for i in val_rows] for k in pipeline.columns}))
    y = torch.tensor([result.labels.index(columns["y"][i]) for i in val_rows])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(module(x), y).item()
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_split_is_seeded_stratified_and_skips_missing_targets() -> None:
    target = ["a"] * 50 + ["b"] * 30 + [None] * 5 + ["c"] * 1
    train, val, test = split_rows(target, task="classification", val_fraction=0.2, seed=0)
    assert len(set(train) & set(val)) == 0 and test.size == 0
    assert sorted([*train, *val]) == [i for i, t in enumerate(target) if t is not None]
    assert [target[i] for i in val].count("a") == 10 and [target[i] for i in val].count("b") == 6
    assert 85 in train  # a class with one row stays in train
    again = split_rows(target, task="classification", val_fraction=0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    other = split_rows(target, task="classification", val_fraction=0.2, seed=1)
    assert not np.array_equal(val, other[1])

    values = [float(i) for i in range(100)] + [None]
    train, val, _ = split_rows(values, task="regression", val_fraction=0.25, seed=0)
    assert len(val) == 25 and len(train) == 75 and 100 not in train


@pytest.mark.parametrize(
    ("hyperparameters", "field", "message"),
    [
        ({"epochs": 0}, "epochs", r"must be in \[1, 10000\]"),
        ({"epochs": 2.0}, "epochs", "must be an integer"),
        ({"epochs": True}, "epochs", "must be an integer"),
        ({"batch_size": -1}, "batch_size", "must be in"),
        ({"lr": 0}, "lr", r"must be in \(0.0, 1.0\]"),
        ({"lr": "fast"}, "lr", "must be a number"),
        ({"lr": float("nan")}, "lr", "must be a number"),
        ({"weight_decay": -0.1}, "weight_decay", "must be in"),
        ({"patience": 0}, "patience", "must be in"),
        ({"val_fraction": 0.9}, "val_fraction", r"must be in \(0.0, 0.5\]"),
        ({"seed": -1}, "seed", "must be in"),
        ({"dropout": 1.0}, "dropout", r"must be in \[0.0, 1.0\)"),
        ({"hidden": 64}, "hidden", "must be a list"),
        ({"hidden": [64, 0]}, "hidden", "layer widths"),
        ({"hidden": [64.0]}, "hidden", "layer widths"),
        ({"learning_rate": 0.1}, "learning_rate", "unknown hyperparameter"),
    ],
)
def test_hyperparameter_errors_name_the_field(hyperparameters: dict, field: str, message: str) -> None:
    with pytest.raises(TrainingError, match=message) as info:
        Hyperparameters.from_dict(hyperparameters)
    assert info.value.field == field and info.value.details == {"field": field}
    assert info.value.kind == "unprocessable"


def test_hyperparameter_defaults() -> None:
    assert Hyperparameters.from_dict(None) == Hyperparameters()
    assert Hyperparameters.from_dict({"lr": 1, "hidden": []}).to_dict() == {
        **Hyperparameters().to_dict(),
        "lr": 1.0,
        "hidden": [],
    }


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"target": "nope", "task": "classification"}, "target", "unknown column"),
        ({"target": "kind", "task": "clustering"}, "task", "must be one of"),
        ({"target": "colour", "task": "regression"}, "target", "regression needs a numeric target"),
        ({"target": "kind", "task": "classification", "features": ["kind"]}, "features", "cannot also be"),
        ({"target": "kind", "task": "classification", "features": ["x1", "x1"]}, "features", "twice"),
        ({"target": "kind", "task": "classification", "features": ["ghost"]}, "features", "unknown column"),
        ({"target": "kind", "task": "classification", "features": []}, "features", "at least one"),
        ({"target": "kind", "task": "classification", "features": "x1"}, "features", "list of column names"),
    ],
)
def test_bad_training_requests(
    dataset: tuple[DatasetProfile, dict[str, list[Any]]], kwargs: dict, field: str, message: str
) -> None:
    profile, columns = dataset
    with pytest.raises(TrainingError, match=message) as info:
        train_tabular(columns, profile, **kwargs)
    assert info.value.field == field


def test_target_refusals(dataset: tuple[DatasetProfile, dict[str, list[Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    profile, columns = dataset
    monkeypatch.setattr(training, "MAX_CLASSES", 100)
    with pytest.raises(TrainingError, match="300 distinct values; at most 100 classes"):
        train_tabular(columns, profile, target="price", task="classification")
    one_class = {**columns, "kind": ["low" if v else None for v in columns["kind"]]}
    with pytest.raises(TrainingError, match="single class"):
        train_tabular(one_class, profile, target="kind", task="classification")
    few = {k: v[:8] for k, v in columns.items()}
    with pytest.raises(TrainingError, match="at least 10 are needed"):
        train_tabular(few, profile, target="price", task="regression")
    with pytest.raises(TrainingError, match="was not read"):
        train_tabular({"kind": columns["kind"]}, profile, target="kind", task="classification")


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for classes in (2, 4):
        y = rng.integers(0, classes, 300)
        logits = rng.normal(size=(300, classes)) + np.eye(classes)[y] * 1.5
        # Rounded probabilities make ties, which ROC AUC must share out.
        probabilities = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1)
        ours = classification_metrics(y, probabilities)
        pred = probabilities.argmax(1)
        assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert ours["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
        if classes == 2:
            assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probabilities[:, 1]))
        else:
            assert "roc_auc" not in ours
    assert "roc_auc" not in classification_metrics(np.zeros(4, np.int64), np.full((4, 2), 0.5))

    y_true = rng.normal(size=100)
    y_pred = y_true + rng.normal(0, 0.3, 100)
    ours = regression_metrics(y_true, y_pred)
    assert ours["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y_true, y_pred)))
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert ours["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    assert regression_metrics(np.ones(3), np.ones(3))["r2"] == 1.0


def test_tabular_mlp_is_a_builtin() -> None:
    assert "tabular-mlp" in architectures.available()
    config = architectures.validate_config("tabular-mlp", {"in_features": 5, "out_features": 3})
    assert config == {"in_features": 5, "out_features": 3, "hidden": [128, 64], "activation": "relu", "dropout": 0.0,
                      "embeddings": []}
    module = architectures.build("tabular-mlp", config)
    assert module(torch.zeros(4, 5)).shape == (4, 3)
    with pytest.raises(architectures.ArchitectureError, match="dtype"):
        architectures.validate_config("tabular-mlp", {"in_features": 5, "out_features": 3, "dtype": "float64"})
    with pytest.raises(ValueError, match="built-in"):
        architectures.unregister("tabular-mlp")
