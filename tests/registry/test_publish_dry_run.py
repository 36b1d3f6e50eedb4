"""Publishing runs the new version once (one row of zeros through the model built from the artifact), so a
manifest whose signature contradicts the model is a 422 instead of a version that fails every call."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from app.core.errors import Invalid
from app.registry import services
from inference import architectures
from tests.registry.test_api import MLP, manifest, mlp_bytes, publish
from tests.serverlog import no_traceback
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def io_spec(in_shape: list[int], out_shape: list[int]) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": in_shape}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": out_shape}]}


CONTRADICTIONS = [
    io_spec([-1, 7], [-1, 3]),  # the model takes 4 features
    io_spec([-1, 4], [-1, 5]),  # and gives 3 scores
    io_spec([-1, -1], [-1, 3]),  # serving warms up with width 1, which this model cannot take
    io_spec([-1, 10**6, 10**6], [-1, 3]),  # no request could ever be that large
]


def test_a_signature_that_contradicts_the_model_is_422(client, server, make_user):
    token = login(client, make_user("maintainer"))["access"]
    assert client.post("/api/v1/models", json={"name": "contradicted", "visibility": "public"},
                       headers=bearer(token)).status_code == 201
    with no_traceback(server.log):
        for signature in CONTRADICTIONS:
            response = publish(client, token, "contradicted", mlp_bytes(), manifest(signature=signature))
            assert response.status_code == 422, (signature, response.text)
            error = response.json()["error"]
            assert error["details"][0]["field"] == "signature", error
    assert client.get("/api/v1/models/contradicted/versions", headers=bearer(token)).json() == []

    # The matching signature publishes, and the version serves.
    response = publish(client, token, "contradicted", mlp_bytes(), manifest(signature=io_spec([-1, 4], [-1, 3])))
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 1
    assert client.post("/api/v1/models/contradicted/versions/1/promote", json={"stage": "production"},
                       headers=bearer(token)).status_code == 200
    predicted = client.post("/api/v1/models/contradicted/predict", json={"inputs": [[0.0, 1.0, 2.0, 3.0]]},
                            headers=bearer(token))
    assert predicted.status_code == 200, predicted.text


class Slow(nn.Module):
    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.release = release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.release.wait(30)
        return self.linear(x)


async def test_the_dry_run_is_bounded_in_time(settings, tmp_path: Path):
    release = threading.Event()
    architectures.register("slow-for-test", lambda config: Slow(release))
    path = tmp_path / "slow.safetensors"
    safetensors.torch.save_file(Slow(release).state_dict(), str(path))
    settings.PUBLISH_DRY_RUN_SECONDS = 0.2
    parsed = {"format": "safetensors", "architecture": "slow-for-test", "config": {},
              "signature": io_spec([-1, 4], [-1, 3])}
    try:
        with pytest.raises(Invalid) as caught:
            await services._dry_run(str(path), parsed)
        assert caught.value.details == {"reason": "dry_run_timeout"}
        assert "0.2s" in caught.value.message
    finally:
        release.set()
        architectures.unregister("slow-for-test")


def test_manifest_without_signature_uses_the_architecture_default(client, make_user):
    token = login(client, make_user("maintainer"))["access"]
    assert client.post("/api/v1/models", json={"name": "defaults"}, headers=bearer(token)).status_code == 201
    response = publish(client, token, "defaults", mlp_bytes(), json.dumps(
        {"format": "safetensors", "architecture": "mlp", "config": MLP}))
    assert response.status_code == 201, response.text
