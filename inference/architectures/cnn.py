"""`cnn`: a small convolutional classifier on ``[N, C, H, W]`` inputs.

Each stage is conv (same padding) -> activation -> 2x2 max-pool (ceil mode, so tiny images still
work); a global average pool feeds the linear head. The parameters therefore do not depend on
the image size: `height` / `width` only fix the dimensions of the default signature, and when
left out the signature accepts any size (rows of different sizes are batched separately).
"""

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
        "in_channels": {"type": "integer", "minimum": 1},
        "height": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "width": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "channels": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 1,
            "default": [16, 32],
        },
        "kernel_size": {"type": "integer", "enum": [1, 3, 5, 7], "default": 3},
        "out_features": {"type": "integer", "minimum": 1},
        "activation": ACTIVATION_SCHEMA,
        "dropout": DROPOUT_SCHEMA,
        "dtype": DTYPE_SCHEMA,
    },
    "required": ["in_channels", "out_features"],
    "additionalProperties": False,
}


class CNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        kernel_size: int,
        out_features: int,
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        dims = [in_channels, *channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2) for a, b in itertools.pairwise(dims)
        )
        self.activation = ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.pool(self.activation(conv(x)))
        return self.head(self.dropout(x.mean(dim=(2, 3))))


def build(config: dict[str, Any]) -> nn.Module:
    module = CNN(
        config["in_channels"],
        config["channels"],
        config["kernel_size"],
        config["out_features"],
        config["activation"],
        config["dropout"],
    )
    return module.to(DTYPES[config["dtype"]][0])


def signature(config: dict[str, Any]) -> Signature:
    datatype: Datatype = DTYPES[config["dtype"]][1]
    height = config["height"] or -1
    width = config["width"] or -1
    return Signature(
        inputs=(TensorSpec("input", datatype, (-1, config["in_channels"], height, width)),),
        outputs=(TensorSpec("output", datatype, (-1, config["out_features"])),),
    )
