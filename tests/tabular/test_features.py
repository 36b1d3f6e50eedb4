from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from inference.errors import ArtifactError, InputError
from tabular.features import UNKNOWN, FeaturePipeline, psi

KINDS = {"age": "numeric", "city": "categorical", "smoker": "boolean"}
TRAIN: dict[str, list[Any]] = {
    "age": [20.0, 30.0, None, 50.0, 40.0],
    "city": ["Paris", "Lyon", "Paris", None, "Nice"],
    "smoker": [True, None, True, False, True],
}


def fitted(top_k: int = 2) -> FeaturePipeline:
    return FeaturePipeline.fit(TRAIN, KINDS, top_k=top_k)


def test_fit_learns_from_train_only() -> None:
    pipeline = fitted()
    assert pipeline.columns == ["age", "city", "smoker"]
    # Lyon and Nice tie at one row each; ties go by value.
    assert pipeline.feature_names == ["age", "city=Paris", "city=Lyon", f"city={UNKNOWN}", "smoker"]
    assert pipeline.n_features == 5
    x = pipeline.transform_columns(TRAIN)
    assert x.dtype == np.float32 and x.shape == (5, 5)
    imputed = np.array([20, 30, 35, 50, 40], dtype=np.float64)  # median of 20, 30, 40, 50
    np.testing.assert_allclose(x[:, 0], (imputed - imputed.mean()) / imputed.std(), rtol=1e-6)
    assert abs(float(x[:, 0].mean())) < 1e-6
    # Missing and the category outside the top 2 both land in the unknown bucket.
    np.testing.assert_array_equal(x[:, 1:4], [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    # A missing boolean takes the train mode (true, 3 to 1); booleans are not scaled.
    np.testing.assert_array_equal(x[:, 4], [1, 1, 1, 0, 1])


def test_new_data_uses_train_statistics() -> None:
    pipeline = fitted()
    x = pipeline.transform_columns({"age": [35.0, None], "city": ["Tokyo", "Lyon"], "smoker": [False, None]})
    mean, std = np.array([20, 30, 35, 50, 40]).mean(), np.array([20, 30, 35, 50, 40]).std()
    np.testing.assert_allclose(x[:, 0], [(35 - mean) / std] * 2, rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1:4], [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(x[:, 4], [0, 1])


def test_constant_and_empty_numeric_columns_do_not_blow_up() -> None:
    pipeline = FeaturePipeline.fit({"c": [7.0, 7.0, 7.0], "e": [None, None, None]}, {"c": "numeric", "e": "numeric"})
    x = pipeline.transform_columns({"c": [7.0, 8.0], "e": [None, 2.0]})
    # e was missing in train, so it has an indicator column after it.
    assert pipeline.feature_names == ["c", "e", "e__missing"]
    np.testing.assert_array_equal(x, [[0, 0, 1], [1, 2, 0]])


def test_json_round_trip_gives_identical_transforms() -> None:
    rng = np.random.default_rng(0)
    columns: dict[str, list[Any]] = {
        "age": [None if rng.random() < 0.1 else float(rng.normal(40, 13)) for _ in range(200)],
        "city": [rng.choice(["a", "b", "c", "d"]).item() if rng.random() > 0.1 else None for _ in range(200)],
        "smoker": [bool(rng.random() < 0.3) for _ in range(200)],
    }
    pipeline = FeaturePipeline.fit(columns, KINDS, top_k=3)
    restored = FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert restored == pipeline
    assert restored.feature_names == pipeline.feature_names
    np.testing.assert_array_equal(restored.transform_columns(columns), pipeline.transform_columns(columns))
    assert restored.reference_stats(columns) == pipeline.reference_stats(columns)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 3, "columns": []},
        {"version": 1, "columns": [{"name": "a", "kind": "numeric", "median": 0, "mean": 0, "std": 0, "edges": []}]},
        {"version": 1, "columns": [{"name": "a", "kind": "numeric", "median": "x", "mean": 0, "std": 1, "edges": []}]},
        {"version": 1, "columns": [{"name": "a", "kind": "weird"}]},
        {"version": 1, "columns": [{"name": "a", "kind": "boolean", "fill": 1}]},
        {"version": 1, "columns": [{"name": "a", "kind": "categorical", "categories": [1]}]},
        {"version": 1, "columns": [{"name": "a", "kind": "boolean", "fill": True}] * 2},
    ],
)
def test_from_dict_refuses_malformed_pipelines(data: dict) -> None:
    with pytest.raises(ArtifactError, match="malformed feature pipeline"):
        FeaturePipeline.from_dict(data)


def test_transform_records_matches_columns() -> None:
    pipeline = fitted()
    records = [
        {"age": 33, "city": " Lyon ", "smoker": "yes"},
        {"age": None, "city": None, "smoker": None},
        {"age": 61.5, "city": "NA", "smoker": 0},
        {"smoker": False, "city": "Paris", "age": float("nan")},
    ]
    expected = pipeline.transform_columns(
        {"age": [33.0, None, 61.5, None], "city": ["Lyon", None, None, "Paris"], "smoker": [True, None, False, False]}
    )
    np.testing.assert_array_equal(pipeline.transform_records(records), expected)
    assert pipeline.transform_records([]).shape == (0, 5)


@pytest.mark.parametrize(
    ("record", "column", "message"),
    [
        ({"age": 1, "city": "a", "smoker": True, "height": 2}, "height", "unknown column"),
        ({"age": 1, "city": "a"}, "smoker", "missing column"),
        ({"age": "31", "city": "a", "smoker": True}, "age", "expected a number or null, got string"),
        ({"age": True, "city": "a", "smoker": True}, "age", "expected a number or null, got boolean"),
        ({"age": [1], "city": "a", "smoker": True}, "age", "got array"),
        ({"age": 1, "city": 5, "smoker": True}, "city", "expected a string or null, got number"),
        ({"age": 1, "city": "a", "smoker": "maybe"}, "smoker", "expected true, false or null"),
        ({"age": 1, "city": "a", "smoker": 2}, "smoker", "expected true, false or null"),
        ({"age": 10**400, "city": "a", "smoker": True}, "age", "out of range"),
    ],
)
def test_transform_records_errors_name_the_column(record: dict, column: str, message: str) -> None:
    good = {"age": 1, "city": "a", "smoker": True}
    with pytest.raises(InputError, match=message) as info:
        fitted().transform_records([good, record])
    assert info.value.input_name == column
    assert info.value.details == {"input": column}
    assert "record 1" in info.value.message
    assert info.value.kind == "invalid"


def test_transform_records_refuses_non_objects() -> None:
    with pytest.raises(InputError, match="record 0 must be an object"):
        fitted().transform_records([["age", 1]])
    with pytest.raises(InputError, match="must be a list"):
        fitted().transform_records("age")


def test_reference_stats_and_psi() -> None:
    rng = np.random.default_rng(1)
    train: dict[str, list[Any]] = {
        "age": [float(v) for v in rng.normal(40, 10, 5000)] + [None] * 100,
        "city": [str(v) for v in rng.choice(["a", "b", "c"], 5100, p=[0.6, 0.3, 0.1])],
        "smoker": [bool(v) for v in rng.random(5100) < 0.25],
    }
    pipeline = FeaturePipeline.fit(train, KINDS, top_k=2)
    stats = pipeline.reference_stats(train)
    json.dumps(stats)
    age = stats["age"]
    assert len(age["edges"]) == 9 and age["edges"] == sorted(age["edges"])
    np.testing.assert_allclose(age["fractions"], [0.1] * 10, atol=0.002)  # deciles split train evenly
    assert age["missing"] == pytest.approx(100 / 5100)
    assert stats["city"]["categories"] == ["a", "b", UNKNOWN]
    assert sum(stats["city"]["fractions"]) == pytest.approx(1)
    assert stats["smoker"]["categories"] == ["false", "true"]
    assert stats["smoker"]["fractions"][1] == pytest.approx(0.25, abs=0.02)

    same = pipeline.reference_stats({k: v[:2000] for k, v in train.items()})
    shifted = pipeline.reference_stats({**train, "age": [float(v) for v in rng.normal(55, 10, 2000)]})
    assert psi(age["fractions"], same["age"]["fractions"]) < 0.02
    assert psi(age["fractions"], shifted["age"]["fractions"]) > 0.25
    assert math.isfinite(psi([1, 0], [0, 1]))
    with pytest.raises(ValueError):
        psi([1], [0.5, 0.5])
