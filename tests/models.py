"""Pytest plugin: publish a model through the API (used by serving, monitoring and job tests)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from inference.architectures import build
from tests.registry.test_api import mlp_bytes, publish
from tests.support import bearer, login

MLP = {"in_features": 4, "hidden": [8], "out_features": 3}


@dataclass
class Published:
    name: str
    token: str
    module: torch.nn.Module

    def expected(self, rows: list[list[float]]) -> list[list[float]]:
        with torch.no_grad():
            return self.module(torch.tensor(rows, dtype=torch.float32)).tolist()


@pytest.fixture
def publish_model(client, make_user) -> Callable[..., Published]:
    """Creates a model owned by a fresh maintainer, publishes one mlp version per seed, promotes the last."""

    def make(name: str, seeds: tuple[int, ...] = (0,), config: dict = MLP, promote: bool = True,
             **settings: object) -> Published:
        token = login(client, make_user("maintainer"))["access"]
        response = client.post("/api/v1/models", json={"name": name, "visibility": "public"}, headers=bearer(token))
        assert response.status_code == 201, response.text
        if settings:
            assert client.patch(f"/api/v1/models/{name}", json=settings, headers=bearer(token)).status_code == 200
        for seed in seeds:
            manifest = json.dumps({"format": "safetensors", "architecture": "mlp", "config": config})
            response = publish(client, token, name, mlp_bytes(config, seed=seed), manifest)
            assert response.status_code == 201, response.text
        if promote:
            response = client.post(f"/api/v1/models/{name}/versions/{len(seeds)}/promote",
                                   json={"stage": "production"}, headers=bearer(token))
            assert response.status_code == 200, response.text
        torch.manual_seed(seeds[-1])
        module = build("mlp", config).eval()
        return Published(name=name, token=token, module=module)

    return make
