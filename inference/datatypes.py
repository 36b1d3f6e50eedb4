"""Open Inference Protocol (V2) datatypes and their numpy / torch counterparts.

Supported: BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64.
BYTES and BF16 are refused with `DatatypeError`: no built-in architecture consumes strings, and
numpy has no bfloat16.

Unsigned types beyond UINT8 have almost no kernels in torch, so they are widened when a tensor
crosses into torch (`numpy_to_torch`): UINT16 -> int32, UINT32 -> int64, UINT64 -> int64 (values
above 2**63-1 are refused). `Datatype.torch_dtype` is the dtype the model actually receives.

Casting rules for request data (`cast_input`), chosen so that no value silently changes class:

- same dtype: unchanged;
- integer -> any integer type: allowed only if every value fits the target range;
- integer -> any float type: allowed (JSON has one number type; ``[1, 2]`` must feed an FP32 input);
- float -> any float type: allowed (JSON floats parse as float64); an overflow shows up as +-Inf,
  which `signature.validate_inputs` then rejects;
- float -> integer, anything -> BOOL except BOOL, BOOL -> anything else, strings/objects: refused.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np
import torch

from inference.errors import DatatypeError, InputError


class Datatype(enum.StrEnum):
    BOOL = "BOOL"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return _NUMPY[self]

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype the model receives for this datatype (widened for UINT16/32/64)."""
        return _TORCH[self]

    @property
    def itemsize(self) -> int:
        return self.numpy_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self in (Datatype.FP16, Datatype.FP32, Datatype.FP64)


_NUMPY: dict[Datatype, np.dtype[Any]] = {
    Datatype.BOOL: np.dtype(np.bool_),
    Datatype.INT8: np.dtype(np.int8),
    Datatype.INT16: np.dtype(np.int16),
    Datatype.INT32: np.dtype(np.int32),
    Datatype.INT64: np.dtype(np.int64),
    Datatype.UINT8: np.dtype(np.uint8),
    Datatype.UINT16: np.dtype(np.uint16),
    Datatype.UINT32: np.dtype(np.uint32),
    Datatype.UINT64: np.dtype(np.uint64),
    Datatype.FP16: np.dtype(np.float16),
    Datatype.FP32: np.dtype(np.float32),
    Datatype.FP64: np.dtype(np.float64),
}
_TORCH: dict[Datatype, torch.dtype] = {
    Datatype.BOOL: torch.bool,
    Datatype.INT8: torch.int8,
    Datatype.INT16: torch.int16,
    Datatype.INT32: torch.int32,
    Datatype.INT64: torch.int64,
    Datatype.UINT8: torch.uint8,
    Datatype.UINT16: torch.int32,
    Datatype.UINT32: torch.int64,
    Datatype.UINT64: torch.int64,
    Datatype.FP16: torch.float16,
    Datatype.FP32: torch.float32,
    Datatype.FP64: torch.float64,
}
_BY_NUMPY: dict[np.dtype[Any], Datatype] = {v: k for k, v in _NUMPY.items()}
_REFUSED = {
    "BYTES": "BYTES (string) tensors are not supported: send numeric tensors",
    "BF16": "BF16 is not supported: send FP16 or FP32",
}


def parse_datatype(name: object) -> Datatype:
    if isinstance(name, str):
        if name in _REFUSED:
            raise DatatypeError(_REFUSED[name], details={"datatype": name})
        try:
            return Datatype(name)
        except ValueError:
            pass
    raise DatatypeError(
        f"unknown datatype {name!r}; expected one of {', '.join(Datatype)}", details={"datatype": str(name)}
    )


def datatype_of(dtype: np.dtype[Any]) -> Datatype:
    """The V2 datatype of a numpy dtype (byte order ignored); `DatatypeError` if there is none."""
    found = _BY_NUMPY.get(dtype.newbyteorder("="))
    if found is None:
        raise DatatypeError(f"numpy dtype {dtype} has no V2 datatype", details={"datatype": str(dtype)})
    return found


def cast_input(array: np.ndarray, datatype: Datatype, *, name: str) -> np.ndarray:
    """Convert request data to `datatype` following the module's casting rules, or raise `InputError`."""
    target = datatype.numpy_dtype
    src = array.dtype
    if src == target:
        return array
    if src.kind in "iu" and target.kind in "iu":
        if array.size:
            lo, hi = int(array.min()), int(array.max())
            info = np.iinfo(target)
            if lo < info.min or hi > info.max:
                raise InputError(name, f"values in [{lo}, {hi}] do not fit {datatype} (range [{info.min}, {info.max}])")
        return array.astype(target)
    if src.kind in "iuf" and target.kind == "f":
        # Overflow becomes +-Inf, which validate_inputs reports; the warning would only be noise.
        with np.errstate(over="ignore"):
            return array.astype(target)
    raise InputError(name, f"cannot use {_describe(src)} data for a {datatype} input")


def array_from_json(data: Any, datatype: Datatype, *, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Build an array of `datatype` from a JSON value: a nested list, or a flat row-major list.

    With `shape`, the element count must equal its product and the result takes that shape (V2
    accepts both flat and nested ``data``). Ragged lists, strings, nulls and values that break
    the casting rules raise `InputError` naming `name`.
    """
    if not isinstance(data, list):
        raise InputError(name, f"data must be a list of numbers, got {type(data).__name__}")
    if shape is not None and any(d < 0 for d in shape):
        raise InputError(name, f"shape {list(shape)} has a negative dimension")
    try:
        array = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise InputError(name, f"data is not a rectangular list of numbers ({_first_line(exc)})") from exc
    if array.dtype == object:
        raise InputError(name, "data is ragged, or holds nulls, non-numbers or integers beyond 64 bits")
    if array.dtype.kind not in "biuf":
        raise InputError(name, f"data must hold numbers, got {_describe(array.dtype)}")
    if array.dtype.kind == "f" and array.size == 0:
        # np.array([]) is float64 but carries no values to object to.
        array = array.astype(datatype.numpy_dtype)
    elif array.dtype.kind == "f" and datatype is Datatype.UINT64:
        # numpy infers float64 for integers above 2**63-1; parse those exactly instead.
        exact = np.array(data, dtype=object)
        if all(type(v) is int for v in exact.flat):
            try:
                array = exact.astype(np.uint64)
            except OverflowError as exc:
                raise InputError(name, "values do not fit UINT64") from exc
    array = cast_input(array, datatype, name=name)
    if shape is not None:
        expected = math.prod(shape)
        if array.size != expected:
            raise InputError(name, f"data holds {array.size} elements but shape {list(shape)} needs {expected}")
        array = array.reshape(shape)
    return array


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing memory with `array` when possible, widening unsigned types torch lacks."""
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    elif array.dtype == np.uint32:
        array = array.astype(np.int64)
    elif array.dtype == np.uint64:
        if array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ValueError("UINT64 values above 2**63-1 cannot be passed to torch")
        array = array.astype(np.int64)
    # torch.from_numpy warns on read-only arrays (e.g. views of a request body) and needs aligned data.
    array = np.require(array, requirements=["C_CONTIGUOUS", "ALIGNED", "WRITEABLE"])
    return torch.from_numpy(array)


def torch_to_numpy(tensor: torch.Tensor, datatype: Datatype) -> np.ndarray:
    """Copy a model output to host memory as `datatype`.

    Floats convert to any float type; integers and bools to an integer type only when every value
    fits. Anything else means the model disagrees with its signature and raises `TypeError`.
    """
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    array = tensor.cpu().numpy()
    target = datatype.numpy_dtype
    if array.dtype == target:
        return array
    if array.dtype.kind == "f" and target.kind == "f":
        with np.errstate(over="ignore"):
            return array.astype(target)
    if array.dtype.kind in "biu" and target.kind in "iu":
        if array.size:
            lo, hi = int(array.min()), int(array.max())
            info = np.iinfo(target)
            if lo < info.min or hi > info.max:
                raise TypeError(f"output values in [{lo}, {hi}] do not fit {datatype}")
        return array.astype(target)
    raise TypeError(f"model produced {array.dtype} where the signature declares {datatype}")


def _describe(dtype: np.dtype[Any]) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "c": "complex"}.get(
        dtype.kind, f"{dtype} (non-numeric)"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
