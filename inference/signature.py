"""Model signatures and request validation.

A `Signature` names and types a model's inputs and outputs. Every tensor's first dimension is
the batch dimension and must be -1; other dimensions are fixed sizes (>= 1) or -1 for a variable
size. The model is called positionally with inputs in signature order; its outputs map to the
output specs (see `runner`).

Dict form, as stored by the app and returned by V2 model metadata::

    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.datatypes import Datatype, cast_input, parse_datatype
from inference.errors import DatatypeError, InputError, SignatureError

__all__ = ["InputError", "Signature", "SignatureError", "TensorSpec", "validate_inputs"]

MAX_NAME_LENGTH = 256


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: Datatype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > MAX_NAME_LENGTH:
            raise SignatureError(f"tensor name must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
        if not isinstance(self.datatype, Datatype):
            raise SignatureError(f"tensor {self.name!r}: datatype must be a Datatype")
        if not self.shape:
            raise SignatureError(f"tensor {self.name!r}: shape needs at least the batch dimension")
        if self.shape[0] != -1:
            raise SignatureError(f"tensor {self.name!r}: the first (batch) dimension must be -1")
        for dim in self.shape[1:]:
            if type(dim) is not int or (dim < 1 and dim != -1):
                raise SignatureError(f"tensor {self.name!r}: dimension {dim!r} must be -1 or a positive int")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        if not isinstance(data, Mapping):
            raise SignatureError("each tensor spec must be an object with name, datatype and shape")
        name = data.get("name")
        try:
            datatype = parse_datatype(data.get("datatype"))
        except DatatypeError as exc:
            raise SignatureError(f"tensor {name!r}: {exc.message}") from exc
        shape = data.get("shape")
        if not isinstance(shape, list | tuple) or not all(type(d) is int for d in shape):
            raise SignatureError(f"tensor {name!r}: shape must be a list of integers")
        return cls(name=name, datatype=datatype, shape=tuple(shape))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": str(self.datatype), "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not specs:
                raise SignatureError(f"a signature needs at least one of {kind}")
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise SignatureError(f"duplicate {kind} names: {', '.join(duplicates)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        if not isinstance(data, Mapping):
            raise SignatureError("a signature must be an object with 'inputs' and 'outputs'")
        parsed: dict[str, tuple[TensorSpec, ...]] = {}
        for kind in ("inputs", "outputs"):
            specs = data.get(kind)
            if not isinstance(specs, list):
                raise SignatureError(f"signature.{kind} must be a list of tensor specs")
            parsed[kind] = tuple(TensorSpec.from_dict(s) for s in specs)
        return cls(inputs=parsed["inputs"], outputs=parsed["outputs"])

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def example_inputs(self, rows: int = 1) -> dict[str, np.ndarray]:
        """Zero-filled inputs of `rows` rows, variable dimensions set to 1 (used for warm-up)."""
        return {
            s.name: np.zeros((rows, *(1 if d == -1 else d for d in s.shape[1:])), dtype=s.datatype.numpy_dtype)
            for s in self.inputs
        }


def validate_inputs(signature: Signature, inputs: Mapping[str, np.ndarray], max_elements: int) -> dict[str, np.ndarray]:
    """Check request inputs against `signature`; return them cast to the declared datatypes.

    Raises `InputError` naming the offending input for: an unknown or missing input, a datatype
    the casting rules of `inference.datatypes` refuse, a wrong rank or fixed dimension, a zero-size
    dimension, more than `max_elements` elements in one input, NaN or +-Inf in a float input, an
    empty batch, and inputs that disagree on the number of rows.
    """
    expected = {s.name: s for s in signature.inputs}
    for name in inputs:
        if name not in expected:
            raise InputError(name, f"unknown input; the model takes {_names(signature.input_names)}")
    for name in expected:
        if name not in inputs:
            raise InputError(name, "missing input")

    out: dict[str, np.ndarray] = {}
    rows: tuple[str, int] | None = None
    for spec in signature.inputs:
        array = inputs[spec.name]
        if not isinstance(array, np.ndarray):
            raise InputError(spec.name, f"expected an array, got {type(array).__name__}")
        if array.size > max_elements:
            raise InputError(spec.name, f"{array.size} elements exceed the limit of {max_elements}")
        if array.ndim != len(spec.shape):
            raise InputError(
                spec.name,
                f"expected {len(spec.shape)} dimensions {_shape(spec.shape)}, got shape {list(array.shape)}",
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if want != -1 and want != got:
                raise InputError(
                    spec.name,
                    f"dimension {axis} must be {want} {_shape(spec.shape)}, got shape {list(array.shape)}",
                )
            if got == 0:
                what = "empty batch (0 rows)" if axis == 0 else f"dimension {axis} is empty"
                raise InputError(spec.name, what)
        array = cast_input(array, spec.datatype, name=spec.name)
        if spec.datatype.is_float and not np.isfinite(array).all():
            raise InputError(spec.name, "NaN or infinite values are not accepted")
        if rows is None:
            rows = (spec.name, array.shape[0])
        elif array.shape[0] != rows[1]:
            raise InputError(
                spec.name,
                f"has {array.shape[0]} rows but input {rows[0]!r} has {rows[1]}; batch sizes must match",
            )
        out[spec.name] = np.ascontiguousarray(array)
    return out


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if i == 0 else ("*" if d == -1 else str(d)) for i, d in enumerate(shape)) + "]"


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
