"""Training with entity embeddings, saved as safetensors and served from raw records."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch

from inference.formats import load_module
from tabular.features import FeaturePipeline
from tabular.metrics import predict_records
from tabular.profiling import profile_csv, read_columns
from tabular.training import train_tabular

QUICK = {"epochs": 40, "patience": 8, "hidden": [32]}


def stores_csv(path: Path, rows: int = 1500, levels: int = 60, seed: int = 0) -> Path:
    """A store id (60 levels, its effect most of the signal), an amount with missing values, a label."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1.5, levels)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["store", "amount", "label"])
        for i in range(rows):
            store = i % levels if i < levels else int(rng.integers(0, levels))
            amount = rng.normal()
            label = "yes" if effect[store] + 0.7 * amount + rng.normal(0, 0.4) > 0 else "no"
            writer.writerow([f"store_{store}", "" if rng.random() < 0.2 else f"{amount:.5f}", label])
    return path


def test_train_save_load_and_predict_raw_records_with_unseen_values(tmp_path: Path) -> None:
    path = stores_csv(tmp_path / "stores.csv")
    profile = profile_csv(path)
    columns = read_columns(path, profile, profile.names)
    result = train_tabular(columns, profile, target="label", task="classification", hyperparameters=QUICK)

    assert result.config["embeddings"] == [{"column": 0, "size": 61, "dim": 16}]
    assert result.pipeline["version"] == 2
    store, amount = result.pipeline["columns"]
    assert store["encoding"] == "embedding" and len(store["categories"]) == 60
    assert amount["indicator"] is True
    assert result.metrics["scored_on"] == "test" and result.metrics["test_rows"] == 225
    assert result.metrics["accuracy"] > 0.8

    weights = tmp_path / "model.safetensors"
    safetensors.torch.save_file(result.state_dict, str(weights))
    module = load_module(weights, "safetensors", result.architecture, result.config, "cpu")
    pipeline = FeaturePipeline.from_dict(result.pipeline)
    records = [
        {"store": "store_3", "amount": 0.5},
        {"store": "a store opened after training", "amount": None},
        {"store": None, "amount": -1.0},
    ]
    served = predict_records(module, pipeline, result.labels, result.task, records)
    assert [set(p["probabilities"]) for p in served] == [{"no", "yes"}] * 3
    # Unseen and missing stores both read as the unknown slot: the same prediction at the same amount.
    same = predict_records(module, pipeline, result.labels, result.task,
                           [{"store": "never seen", "amount": -1.0}, {"store": None, "amount": -1.0}])
    # (The same row twice in one batch may differ in the last bits: BLAS kernels treat rows unevenly.)
    assert same[0]["label"] == same[1]["label"]
    assert same[0]["probabilities"] == pytest.approx(same[1]["probabilities"], abs=1e-6)

    # What serving computes from raw records is what training computed from the typed columns.
    rows = list(range(20))
    typed = {name: [columns[name][i] for i in rows] for name in ("store", "amount")}
    raw = [{"store": typed["store"][i], "amount": typed["amount"][i]} for i in range(20)]
    np.testing.assert_array_equal(pipeline.transform_records(raw), pipeline.transform_columns(typed))
