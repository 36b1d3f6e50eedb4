"""`tabular-mlp`: the network `tabular.training` trains on encoded CSV rows.

Input ``[N, in_features]`` FP32, as `tabular.features.FeaturePipeline` encodes rows; output
``[N, out_features]``, class logits for classification or one value for regression. Always FP32.

Without ``embeddings`` it is the same layers as `mlp` (so the same state_dict keys, and artifacts
trained before embeddings existed load unchanged). With them, each entry
``{"column": i, "size": n, "dim": d}`` says that input column ``i`` holds a category index
(``0`` the unknown slot, ``1..n-1`` the vocabulary, written as a float) looked up in an
``n x d`` embedding table; the network sees the other columns followed by every embedding, in
the order listed. An index that is not a whole number in ``[0, n)`` (a V2 client may send anything)
reads as the unknown slot, so a tensor request can never index outside a table.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inference.architectures.common import ACTIVATION_SCHEMA, DROPOUT_SCHEMA
from inference.architectures.mlp import MLP
from inference.datatypes import Datatype
from inference.errors import ArchitectureError
from inference.signature import Signature, TensorSpec

EMBEDDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "column": {"type": "integer", "minimum": 0},
        "size": {"type": "integer", "minimum": 1},
        "dim": {"type": "integer", "minimum": 1, "maximum": 1024},
    },
    "required": ["column", "size", "dim"],
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "in_features": {"type": "integer", "minimum": 1},
        "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [128, 64]},
        "out_features": {"type": "integer", "minimum": 1},
        "activation": ACTIVATION_SCHEMA,
        "dropout": DROPOUT_SCHEMA,
        "embeddings": {"type": "array", "items": EMBEDDING_SCHEMA, "default": [], "maxItems": 1000},
    },
    "required": ["in_features", "out_features"],
    "additionalProperties": False,
}


class EmbeddingMLP(nn.Module):
    """`MLP` over the dense input columns concatenated with one embedding per categorical index column."""

    dense_index: torch.Tensor
    embedding_index: torch.Tensor
    embedding_size: torch.Tensor

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        specs = config["embeddings"]
        columns = [int(e["column"]) for e in specs]
        if len(set(columns)) != len(columns) or max(columns) >= config["in_features"]:
            raise ArchitectureError(
                "tabular-mlp: embedding columns must be distinct and below in_features",
                details={"architecture": "tabular-mlp", "field": "embeddings"},
            )
        dense = [i for i in range(config["in_features"]) if i not in set(columns)]
        self.register_buffer("dense_index", torch.tensor(dense, dtype=torch.long), persistent=False)
        self.register_buffer("embedding_index", torch.tensor(columns, dtype=torch.long), persistent=False)
        self.register_buffer(
            "embedding_size", torch.tensor([int(e["size"]) for e in specs], dtype=torch.long), persistent=False
        )
        self.embeddings = nn.ModuleList(nn.Embedding(int(e["size"]), int(e["dim"])) for e in specs)
        width = len(dense) + sum(int(e["dim"]) for e in specs)
        self.mlp = MLP(width, config["hidden"], config["out_features"], config["activation"], config["dropout"])

    @property
    def layers(self) -> nn.ModuleList:
        return self.mlp.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x.index_select(1, self.embedding_index)
        whole = torch.nan_to_num(raw, nan=-1.0).round()
        valid = (whole == raw) & (whole >= 0) & (whole < self.embedding_size)
        index = torch.where(valid, whole, torch.zeros_like(whole)).long()
        parts = [x.index_select(1, self.dense_index)]
        parts.extend(table(index[:, i]) for i, table in enumerate(self.embeddings))
        return self.mlp(torch.cat(parts, dim=1))


def build(config: dict[str, Any]) -> nn.Module:
    if config.get("embeddings"):
        return EmbeddingMLP(config)
    return MLP(config["in_features"], config["hidden"], config["out_features"], config["activation"], config["dropout"])


def signature(config: dict[str, Any]) -> Signature:
    return Signature(
        inputs=(TensorSpec("input", Datatype.FP32, (-1, config["in_features"])),),
        outputs=(TensorSpec("output", Datatype.FP32, (-1, config["out_features"])),),
    )


def rescale_output(module: nn.Module, scale: float, shift: float) -> None:
    """Fold ``y * scale + shift`` into the last layer, so a regression trained on a standardised
    target serves values on the target's own scale with no extra step."""
    head = module.layers[-1] if isinstance(module, MLP | EmbeddingMLP) else None
    if not isinstance(head, nn.Linear):
        raise TypeError(f"expected a tabular-mlp module, got {type(module).__name__}")
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale).add_(shift)
