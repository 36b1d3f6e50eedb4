"""`tabular-mlp`: the network `tabular.training` trains on encoded CSV rows.

The same layers as `mlp` (so the same state_dict keys), with defaults that suit tabular data and
always FP32: input ``[N, in_features]`` as `tabular.features.FeaturePipeline` encodes rows;
output ``[N, out_features]``, class logits for classification or one value for regression.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inference.architectures.common import ACTIVATION_SCHEMA, DROPOUT_SCHEMA
from inference.architectures.mlp import MLP
from inference.datatypes import Datatype
from inference.signature import Signature, TensorSpec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "in_features": {"type": "integer", "minimum": 1},
        "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [128, 64]},
        "out_features": {"type": "integer", "minimum": 1},
        "activation": ACTIVATION_SCHEMA,
        "dropout": DROPOUT_SCHEMA,
    },
    "required": ["in_features", "out_features"],
    "additionalProperties": False,
}


def build(config: dict[str, Any]) -> nn.Module:
    return MLP(config["in_features"], config["hidden"], config["out_features"], config["activation"], config["dropout"])


def signature(config: dict[str, Any]) -> Signature:
    return Signature(
        inputs=(TensorSpec("input", Datatype.FP32, (-1, config["in_features"])),),
        outputs=(TensorSpec("output", Datatype.FP32, (-1, config["out_features"])),),
    )


def rescale_output(module: nn.Module, scale: float, shift: float) -> None:
    """Fold ``y * scale + shift`` into the last layer, so a regression trained on a standardised
    target serves values on the target's own scale with no extra step."""
    head = module.layers[-1] if isinstance(module, MLP) else None
    if not isinstance(head, nn.Linear):
        raise TypeError(f"expected a tabular-mlp module, got {type(module).__name__}")
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale).add_(shift)
