from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.datatypes import (
    MAX_ELEMENTS,
    MAX_RANK,
    Datatype,
    array_from_json,
    cast_input,
    checked_shape,
    datatype_of,
    numpy_to_torch,
    parse_datatype,
    torch_to_numpy,
)
from inference.errors import DatatypeError, InputError


@pytest.mark.parametrize("name", [d.value for d in Datatype])
def test_every_datatype_maps_to_numpy_and_torch(name: str) -> None:
    dt = parse_datatype(name)
    array = np.zeros((2, 3), dtype=dt.numpy_dtype)
    tensor = numpy_to_torch(array)
    assert tensor.dtype == dt.torch_dtype
    assert datatype_of(array.dtype) is dt
    assert torch_to_numpy(tensor, dt).dtype == dt.numpy_dtype


@pytest.mark.parametrize("name", ["BYTES", "BF16", "FP8", "", None, 3])
def test_unsupported_datatypes_are_refused_by_name(name: object) -> None:
    with pytest.raises(DatatypeError) as err:
        parse_datatype(name)
    if name == "BYTES":
        assert "BYTES" in err.value.message and "not supported" in err.value.message


def test_wide_unsigned_values_are_widened_and_checked_at_the_torch_boundary() -> None:
    assert numpy_to_torch(np.array([65535], dtype=np.uint16)).tolist() == [65535]
    assert numpy_to_torch(np.array([2**32 - 1], dtype=np.uint32)).tolist() == [2**32 - 1]
    with pytest.raises(ValueError, match="2\\*\\*63"):
        numpy_to_torch(np.array([2**64 - 1], dtype=np.uint64))


def test_read_only_buffers_cross_into_torch_without_warning() -> None:
    array = np.frombuffer(b"\x00" * 16, dtype=np.float32)
    assert not array.flags.writeable
    assert numpy_to_torch(array).shape == (4,)


def test_integers_cast_only_when_they_fit() -> None:
    assert cast_input(np.array([1, 127]), Datatype.INT8, name="x").dtype == np.int8
    with pytest.raises(InputError, match="do not fit INT8"):
        cast_input(np.array([1, 128]), Datatype.INT8, name="x")
    with pytest.raises(InputError, match="do not fit UINT8"):
        cast_input(np.array([-1]), Datatype.UINT8, name="x")


def test_ints_feed_floats_but_floats_never_feed_ints_or_bools() -> None:
    assert cast_input(np.array([1, 2]), Datatype.FP32, name="x").dtype == np.float32
    assert cast_input(np.array([0.5]), Datatype.FP16, name="x").dtype == np.float16
    with pytest.raises(InputError, match="floating-point data for a INT32"):
        cast_input(np.array([1.0]), Datatype.INT32, name="x")
    with pytest.raises(InputError):
        cast_input(np.array([1]), Datatype.BOOL, name="x")
    with pytest.raises(InputError):
        cast_input(np.array([True]), Datatype.FP32, name="x")


def test_json_nested_and_flat_data() -> None:
    nested = array_from_json([[1, 2], [3, 4]], Datatype.FP32, name="x", shape=(2, 2))
    flat = array_from_json([1, 2, 3, 4], Datatype.FP32, name="x", shape=(2, 2))
    np.testing.assert_array_equal(nested, flat)
    assert nested.dtype == np.float32
    assert array_from_json([True, False], Datatype.BOOL, name="b").tolist() == [True, False]


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([[1, 2], [3]], Datatype.FP32, "rectangular"),
        ([1, None], Datatype.FP32, "ragged"),
        (["1", "2"], Datatype.FP32, "must hold numbers"),
        ([1.5], Datatype.INT64, "floating-point"),
        ([1, 2, 3], Datatype.FP32, "needs 4"),
        ("1,2", Datatype.FP32, "must be a list"),
        ([2**70], Datatype.INT64, "beyond 64 bits"),
    ],
)
def test_json_data_errors_name_the_input(data: object, datatype: Datatype, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        array_from_json(data, datatype, name="pixels", shape=(2, 2) if message == "needs 4" else None)
    assert err.value.input_name == "pixels"


def test_outputs_convert_to_declared_type_or_fail() -> None:
    assert torch_to_numpy(torch.ones(2, dtype=torch.float32), Datatype.FP64).dtype == np.float64
    assert torch_to_numpy(torch.tensor([3]), Datatype.UINT32).tolist() == [3]
    with pytest.raises(TypeError):
        torch_to_numpy(torch.tensor([-3]), Datatype.UINT32)
    with pytest.raises(TypeError):
        torch_to_numpy(torch.tensor([0.5]), Datatype.INT64)


def test_json_uint64_beyond_int64_is_exact() -> None:
    big = [[2**64 - 1, 5], [2**63, 0]]
    assert array_from_json(big, Datatype.UINT64, name="x").tolist() == big
    with pytest.raises(InputError, match="do not fit UINT64"):
        array_from_json([2**64 - 1, -1], Datatype.UINT64, name="x")
    with pytest.raises(InputError, match="floating-point"):
        array_from_json([2**64 - 1, 0.5], Datatype.UINT64, name="x")


@settings(max_examples=500, deadline=None)
@given(shape=st.lists(st.integers(0, 3) | st.sampled_from([2**31 - 1, 2**31, 2**32, 2**62, 2**63, 2**64, -1]),
                      max_size=40))
def test_checked_shape_accepts_only_what_numpy_can_hold(shape: list[int]) -> None:
    try:
        dims = checked_shape(shape, name="x")
    except InputError as exc:
        assert exc.input_name == "x"
        assert min(shape) < 0 or len(shape) > MAX_RANK or math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS
        return
    assert dims == tuple(shape) and math.prod(dims) <= MAX_ELEMENTS
    if math.prod(dims) == 0:  # numpy refuses an empty array whose other dimensions overflow; these it takes
        assert np.zeros(0, dtype=np.float64).reshape(dims).shape == dims


@pytest.mark.parametrize("shape", [[1.0], [True], ["2"], [None], "2", None, [[2]]])
def test_checked_shape_takes_only_lists_of_integers(shape: object) -> None:
    with pytest.raises(InputError, match="non-negative integers"):
        checked_shape(shape, name="x")
