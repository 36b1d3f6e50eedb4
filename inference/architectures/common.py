"""Pieces shared by the built-in architectures."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inference.datatypes import Datatype

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}

DTYPES: dict[str, tuple[torch.dtype, Datatype]] = {
    "float32": (torch.float32, Datatype.FP32),
    "float64": (torch.float64, Datatype.FP64),
    "float16": (torch.float16, Datatype.FP16),
}

ACTIVATION_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(ACTIVATIONS), "default": "relu"}
DROPOUT_SCHEMA: dict[str, Any] = {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0}
DTYPE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "enum": list(DTYPES),
    "default": "float32",
    "description": "parameter dtype; inputs and outputs use the matching V2 datatype",
}
