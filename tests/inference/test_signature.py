from __future__ import annotations

import numpy as np
import pytest

from inference.datatypes import Datatype
from inference.errors import InputError, SignatureError
from inference.signature import Signature, TensorSpec, validate_inputs

SIG = Signature.from_dict(
    {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        ],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    }
)


def good(rows: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 3), dtype=np.float32), "ids": np.zeros((rows, 5), dtype=np.int64)}


def test_round_trip() -> None:
    assert Signature.from_dict(SIG.to_dict()) == SIG
    assert SIG.inputs[0] == TensorSpec("x", Datatype.FP32, (-1, 3))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inputs": [], "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}, "at least one of inputs"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 3]}], "outputs": []}, "batch"),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1]}], "outputs": []}, "BYTES"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 0]}], "outputs": []}, "dimension 0"),
        ({"inputs": [{"name": "", "datatype": "FP32", "shape": [-1]}], "outputs": []}, "non-empty"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": "-1"}], "outputs": []}, "list of integers"),
        (
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}] * 2,
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            },
            "duplicate inputs names: x",
        ),
        ({"inputs": {}}, "must be a list"),
    ],
)
def test_malformed_signatures_are_refused(data: dict, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        Signature.from_dict(data)


def test_valid_inputs_pass_and_ints_become_floats() -> None:
    inputs = good()
    inputs["x"] = np.ones((2, 3), dtype=np.int64)
    out = validate_inputs(SIG, inputs, max_elements=100)
    assert out["x"].dtype == np.float32 and out["ids"].shape == (2, 5)


def _mutate(kind: str) -> tuple[dict[str, np.ndarray], str, str]:
    inputs = good()
    if kind == "unknown":
        inputs["z"] = np.ones((2, 1), dtype=np.float32)
        return inputs, "z", "unknown input"
    if kind == "missing":
        del inputs["ids"]
        return inputs, "ids", "missing"
    if kind == "dtype":
        inputs["ids"] = np.ones((2, 5), dtype=np.float64)
        return inputs, "ids", "floating-point data for a INT64"
    if kind == "rank":
        inputs["x"] = np.ones((2, 3, 1), dtype=np.float32)
        return inputs, "x", "expected 2 dimensions"
    if kind == "dim":
        inputs["x"] = np.ones((2, 4), dtype=np.float32)
        return inputs, "x", "dimension 1 must be 3"
    if kind == "elements":
        inputs["ids"] = np.zeros((2, 500), dtype=np.int64)
        return inputs, "ids", "exceed the limit of 100"
    if kind == "nan":
        inputs["x"][1, 2] = np.nan
        return inputs, "x", "NaN"
    if kind == "inf":
        inputs["x"][0, 0] = -np.inf
        return inputs, "x", "infinite"
    if kind == "overflow":
        inputs["x"] = np.full((2, 3), 1e300)
        return inputs, "x", "infinite"
    if kind == "empty":
        return good(rows=0), "x", "empty batch"
    if kind == "rows":
        inputs["ids"] = np.zeros((3, 5), dtype=np.int64)
        return inputs, "ids", "batch sizes must match"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["unknown", "missing", "dtype", "rank", "dim", "elements", "nan", "inf", "overflow", "empty", "rows"]
)
def test_each_bad_input_is_refused_with_its_name(kind: str) -> None:
    inputs, name, message = _mutate(kind)
    with pytest.raises(InputError, match=message) as err:
        validate_inputs(SIG, inputs, max_elements=100)
    assert err.value.input_name == name
    assert err.value.kind == "invalid"


def test_example_inputs_match_the_signature() -> None:
    example = SIG.example_inputs(rows=3)
    assert validate_inputs(SIG, example, max_elements=100)["ids"].shape == (3, 1)
