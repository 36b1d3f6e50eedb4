"""The feature pipeline's categorical vocabulary, unknown slot, missing indicators and robust scaling."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from inference import architectures
from tabular.features import UNKNOWN, FeaturePipeline, embedding_dim


def stores(rows: int = 300, levels: int = 30, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    return [f"s{int(v)}" for v in rng.integers(0, levels, rows)]


def test_vocabulary_is_every_value_seen_min_count_times_and_the_rest_share_slot_zero() -> None:
    city: list[Any] = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["rare"] + [None] * 2
    pipeline = FeaturePipeline.fit({"city": city}, {"city": "categorical"}, min_count=2, onehot_max=0)
    column = pipeline.to_dict()["columns"][0]
    assert column["categories"] == ["a", "b", "c"] and column["encoding"] == "embedding"
    assert pipeline.feature_names == ["city"] and pipeline.n_features == 1
    x = pipeline.transform_columns({"city": ["a", "b", "c", "rare", None, "never seen"]})
    # Known values get 1..n in frequency order; rare, missing and unseen all share the unknown slot 0.
    np.testing.assert_array_equal(x[:, 0], [1, 2, 3, 0, 0, 0])
    assert pipeline.embeddings == [{"column": 0, "size": 4, "dim": embedding_dim(4)}]


def test_small_vocabularies_stay_one_hot_with_the_unknown_slot_last() -> None:
    pipeline = FeaturePipeline.fit({"g": ["x", "y", "x", "z", "y", "x"]}, {"g": "categorical"}, min_count=1)
    assert pipeline.feature_names == ["g=x", "g=y", "g=z", f"g={UNKNOWN}"] and pipeline.embeddings == []
    x = pipeline.transform_columns({"g": ["z", None, "new"]})
    np.testing.assert_array_equal(x, [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]])


def test_the_full_training_vocabulary_is_kept_not_the_top_20() -> None:
    values = stores(rows=3000, levels=150)
    pipeline = FeaturePipeline.fit({"store": values}, {"store": "categorical"})
    assert len(pipeline.to_dict()["columns"][0]["categories"]) == 150
    assert pipeline.embeddings[0]["size"] == 151
    legacy = FeaturePipeline.fit({"store": values}, {"store": "categorical"}, top_k=20)
    assert legacy.n_features == 21


@pytest.mark.parametrize(("size", "dim"), [(2, 2), (4, 3), (11, 6), (151, 27), (1001, 50), (100_000, 50)])
def test_embedding_dimension_rule(size: int, dim: int) -> None:
    assert embedding_dim(size) == dim


def test_missing_indicators_only_where_train_had_missing_values() -> None:
    train = {"a": [1.0, None, 3.0, 4.0], "b": [1.0, 2.0, 3.0, 4.0], "f": [True, None, False, True]}
    kinds = {"a": "numeric", "b": "numeric", "f": "boolean"}
    pipeline = FeaturePipeline.fit(train, kinds)
    assert pipeline.feature_names == ["a", "a__missing", "b", "f", "f__missing"]
    x = pipeline.transform_columns({"a": [None, 2.0], "b": [None, 2.0], "f": [None, False]})
    np.testing.assert_array_equal(x[:, 1], [1, 0])
    np.testing.assert_array_equal(x[:, 4], [1, 0])
    # b had no missing value in train: a missing b at serving time is imputed, with no indicator.
    assert x[0, 2] == pytest.approx((2.5 - 2.5) / np.std([1, 2, 3, 4]))
    assert FeaturePipeline.fit(train, kinds, indicators=False).feature_names == ["a", "b", "f"]


def test_heavy_tailed_columns_get_quantile_scaling_and_normal_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    heavy = [float(v) for v in rng.lognormal(0, 2, 2000)]
    normal = [float(v) for v in rng.normal(0, 1, 2000)]
    pipeline = FeaturePipeline.fit({"h": heavy, "n": normal}, {"h": "numeric", "n": "numeric"})
    h, n = pipeline.to_dict()["columns"]
    assert h["scaling"] == "quantile" and n["scaling"] == "standard"
    x = pipeline.transform_columns({"h": heavy, "n": normal})
    # Quantile scaling: a centred uniform of variance 1, whatever the tail; an outlier cannot exceed it.
    assert abs(float(x[:, 0].mean())) < 0.01 and abs(float(x[:, 0].std()) - 1) < 0.02
    far = pipeline.transform_columns({"h": [1e12], "n": [0.0]})
    assert far[0, 0] == pytest.approx(np.sqrt(3), rel=1e-5)
    assert FeaturePipeline.fit({"h": heavy}, {"h": "numeric"}, robust=False).to_dict()["columns"][0][
        "scaling"] == "standard"


def test_format_2_round_trips_through_json_and_format_1_still_reads() -> None:
    rng = np.random.default_rng(1)
    columns: dict[str, list[Any]] = {
        "store": [*stores(400, 40), None],
        "amount": [*(float(v) for v in rng.lognormal(0, 2, 400)), None],
        "flag": [*(bool(v) for v in rng.integers(0, 2, 400)), None],
    }
    kinds = {"store": "categorical", "amount": "numeric", "flag": "boolean"}
    pipeline = FeaturePipeline.fit(columns, kinds)
    restored = FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert restored == pipeline and restored.embeddings == pipeline.embeddings
    np.testing.assert_array_equal(restored.transform_columns(columns), pipeline.transform_columns(columns))

    # A version stored before embeddings existed: format 1, one-hot over the top values.
    old = {"version": 1, "columns": [
        {"name": "age", "kind": "numeric", "median": 30.0, "mean": 31.0, "std": 2.0, "edges": [30.0]},
        {"name": "city", "kind": "categorical", "categories": ["Paris", "Lyon"]},
        {"name": "smoker", "kind": "boolean", "fill": False},
    ]}
    legacy = FeaturePipeline.from_dict(old)
    assert legacy.feature_names == ["age", "city=Paris", "city=Lyon", f"city={UNKNOWN}", "smoker"]
    np.testing.assert_array_equal(
        legacy.transform_records([{"age": 35, "city": "Nice", "smoker": None}]), [[2.0, 0, 0, 1, 0]]
    )


def test_the_network_reads_any_index_a_client_sends_as_the_unknown_slot() -> None:
    config = architectures.validate_config(
        "tabular-mlp", {"in_features": 2, "out_features": 1, "embeddings": [{"column": 1, "size": 4, "dim": 3}]}
    )
    module = architectures.build("tabular-mlp", config).eval()
    unknown = module(torch.tensor([[0.5, 0.0]]))
    for bad in (-1.0, 4.0, 2.5, float("nan"), float("inf"), 1e30):
        assert torch.equal(module(torch.tensor([[0.5, bad]])), unknown)
    assert not torch.equal(module(torch.tensor([[0.5, 2.0]])), unknown)
    assert set(module.state_dict()) == {"embeddings.0.weight", *(f"mlp.layers.{i}.{p}" for i in range(3)
                                                                 for p in ("weight", "bias"))}
