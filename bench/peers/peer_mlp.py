"""The reference MLP for the peer servers, which run in their own venvs without Torchwire installed.

The same module as `inference.architectures.mlp` (``layers`` of Linear, ReLU between them), so the
safetensors file bench/peers/round_robin.py writes from Torchwire's build loads unchanged, and every server
computes the same thing. A model directory holds ``config.json`` (the mlp config) and ``model.safetensors``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], out_features: int) -> None:
        super().__init__()
        dims = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, head = self.layers
        for layer in body:
            x = self.activation(layer(x))
        return head(x)


def load(directory: str | Path) -> nn.Module:
    """The model in ``directory``, in eval mode, with one torch thread (as Torchwire's runner uses)."""
    torch.set_num_threads(1)
    path = Path(directory)
    config = json.loads((path / "config.json").read_text())
    module = MLP(config["in_features"], list(config.get("hidden", [])), config["out_features"])
    module.load_state_dict(safetensors.torch.load_file(str(path / "model.safetensors")))
    return module.eval()
