"""JSON tensors of the REST API: nested lists in, nested lists out."""

from __future__ import annotations

from typing import Any

import numpy as np

from inference.errors import InputError
from inference.signature import Signature


def array_from_json(name: str, data: Any) -> np.ndarray:
    """A rectangular numeric array; the signature's datatype rules are applied later by the pool."""
    if not isinstance(data, list):
        raise InputError(name, f"must be a nested list of numbers, got {type(data).__name__}")
    try:
        array = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise InputError(name, f"is not a rectangular list of numbers ({exc})") from exc
    if array.ndim >= 1 and array.shape[0] == 0:
        raise InputError(name, "empty batch (0 rows)")
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InputError(name, "must be a rectangular nested list of numbers (no strings, nulls or ragged rows)")
    return array


def inputs_from_json(signature: Signature, inputs: Any) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs as arrays by name, and whether the caller used the single-input shorthand (a bare list)."""
    if isinstance(inputs, list):
        if len(signature.inputs) != 1:
            names = ", ".join(signature.input_names)
            raise InputError("inputs", f"this model takes several inputs ({names}); send an object of name -> list")
        return {signature.inputs[0].name: array_from_json(signature.inputs[0].name, inputs)}, True
    if isinstance(inputs, dict):
        return {str(k): array_from_json(str(k), v) for k, v in inputs.items()}, False
    raise InputError("inputs", "must be a nested list (single-input models) or an object of input name -> list")


def outputs_to_json(outputs: dict[str, np.ndarray], shorthand: bool) -> Any:
    if shorthand and len(outputs) == 1:
        return next(iter(outputs.values())).tolist()
    return {name: array.tolist() for name, array in outputs.items()}
