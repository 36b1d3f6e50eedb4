"""`mlp`: a fully connected network on ``[N, in_features]`` inputs."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from inference.architectures.common import (
    ACTIVATION_SCHEMA,
    ACTIVATIONS,
    DROPOUT_SCHEMA,
    DTYPE_SCHEMA,
    DTYPES,
)
from inference.datatypes import Datatype
from inference.signature import Signature, TensorSpec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "in_features": {"type": "integer", "minimum": 1},
        "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": []},
        "out_features": {"type": "integer", "minimum": 1},
        "activation": ACTIVATION_SCHEMA,
        "dropout": DROPOUT_SCHEMA,
        "dtype": DTYPE_SCHEMA,
    },
    "required": ["in_features", "out_features"],
    "additionalProperties": False,
}


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], out_features: int, activation: str, dropout: float) -> None:
        super().__init__()
        dims = [in_features, *hidden, out_features]
        # Named layers rather than one nn.Sequential, so state_dict keys do not shift with dropout.
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, head = self.layers
        for layer in body:
            x = self.dropout(self.activation(layer(x)))
        return head(x)


def build(config: dict[str, Any]) -> nn.Module:
    module = MLP(
        config["in_features"],
        config["hidden"],
        config["out_features"],
        config["activation"],
        config["dropout"],
    )
    return module.to(DTYPES[config["dtype"]][0])


def signature(config: dict[str, Any]) -> Signature:
    datatype: Datatype = DTYPES[config["dtype"]][1]
    return Signature(
        inputs=(TensorSpec("input", datatype, (-1, config["in_features"])),),
        outputs=(TensorSpec("output", datatype, (-1, config["out_features"])),),
    )
