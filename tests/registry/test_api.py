"""Registry over HTTP: ownership, visibility, serving config, artifact safety, versions and promotion."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from inference.architectures import build
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

MLP = {"in_features": 4, "hidden": [8], "out_features": 3}


def mlp_bytes(config: dict = MLP, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    return safetensors.torch.save(build("mlp", config).state_dict())


def manifest(config: dict = MLP, **extra: object) -> str:
    return json.dumps({"format": "safetensors", "architecture": "mlp", "config": config, **extra})


def publish(client, token: str, name: str, artifact: bytes, manifest_json: str):
    return client.post(
        f"/api/v1/models/{name}/versions",
        headers=bearer(token),
        files={"artifact": ("model.safetensors", io.BytesIO(artifact), "application/octet-stream")},
        data={"manifest": manifest_json},
    )


@pytest.fixture
def maintainer(client, make_user):
    account = make_user("maintainer")
    return account, login(client, account)["access"]


def create_model(client, token: str, name: str, **extra: object):
    return client.post("/api/v1/models", json={"name": name, **extra}, headers=bearer(token))


def test_create_needs_maintainer(client, make_user, maintainer):
    member = login(client, make_user("member"))["access"]
    response = create_model(client, member, "nope")
    assert response.status_code == 403
    assert client.get("/api/v1/models/nope", headers=bearer(member)).status_code == 404
    _, token = maintainer
    response = create_model(client, token, "iris", description="d")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["owner"] == maintainer[0].username and body["visibility"] == "private"
    assert body["serving"] == {"max_batch_size": 32, "max_delay_ms": 5.0, "max_queue": 1024, "timeout_ms": 10000,
                               "device": "auto", "dispatch_policy": "default", "target_p99_ms": None}
    assert create_model(client, token, "iris").status_code == 409
    bad = create_model(client, token, "Bad Name!")
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "name"


def test_visibility_and_sharing(client, make_user, maintainer):
    _, token = maintainer
    reader_account = make_user("member")
    reader = login(client, reader_account)["access"]
    create_model(client, token, "secret")
    create_model(client, token, "open", visibility="public")
    create_model(client, token, "team", visibility="shared")

    names = [m["name"] for m in client.get("/api/v1/models", headers=bearer(reader)).json()]
    assert names == ["open"]
    for name in ("secret", "team"):
        response = client.get(f"/api/v1/models/{name}", headers=bearer(reader))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

    bad = client.patch("/api/v1/models/team", json={"sharing": [reader_account.username, "ghost"]},
                       headers=bearer(token))
    assert bad.status_code == 422 and "ghost" in bad.json()["error"]["message"]
    assert client.get("/api/v1/models/team", headers=bearer(reader)).status_code == 404
    ok = client.patch("/api/v1/models/team", json={"sharing": [reader_account.username]}, headers=bearer(token))
    assert ok.status_code == 200 and ok.json()["sharing"] == [reader_account.username]
    assert client.get("/api/v1/models/team", headers=bearer(reader)).status_code == 200
    # A reader cannot change what they can see.
    assert client.patch("/api/v1/models/team", json={"max_batch_size": 2}, headers=bearer(reader)).status_code == 403
    admin = login(client, make_user("admin"))["access"]
    assert {m["name"] for m in client.get("/api/v1/models", headers=bearer(admin)).json()} >= {"secret", "team"}


def test_patch_serving_config_validates_and_is_atomic(client, maintainer):
    _, token = maintainer
    create_model(client, token, "cfg")
    response = client.patch("/api/v1/models/cfg", json={"max_batch_size": 64, "max_delay_ms": 2.5, "device": "cpu"},
                            headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["serving"]["max_batch_size"] == 64
    for bad in ({"max_batch_size": 0}, {"max_delay_ms": -1}, {"device": "tpu"}, {"max_queue": "many"},
                {"timeout_ms": 10**9}, {"max_batch_size": 8, "device": "gpu"}):
        response = client.patch("/api/v1/models/cfg", json=bad, headers=bearer(token))
        assert response.status_code == 422, (bad, response.text)
    serving = client.get("/api/v1/models/cfg", headers=bearer(token)).json()["serving"]
    assert serving["max_batch_size"] == 64 and serving["device"] == "cpu"


def test_patch_dispatch_policy_and_p99_target(client, maintainer):
    _, token = maintainer
    create_model(client, token, "tuned")
    url = "/api/v1/models/tuned"
    response = client.patch(url, json={"target_p99_ms": 25, "dispatch_policy": "fixed"}, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["serving"]["target_p99_ms"] == 25.0
    assert response.json()["serving"]["dispatch_policy"] == "fixed"
    # Other changes leave them alone; null clears the target; "default" follows the deployment again.
    serving = client.patch(url, json={"max_batch_size": 16}, headers=bearer(token)).json()["serving"]
    assert serving["target_p99_ms"] == 25.0 and serving["dispatch_policy"] == "fixed"
    serving = client.patch(url, json={"target_p99_ms": None, "dispatch_policy": "default"},
                           headers=bearer(token)).json()["serving"]
    assert serving["target_p99_ms"] is None and serving["dispatch_policy"] == "default"
    for bad in ({"target_p99_ms": 0}, {"target_p99_ms": -5}, {"target_p99_ms": "fast"}, {"target_p99_ms": 10**9},
                {"target_p99_ms": True}, {"dispatch_policy": "greedy"}, {"dispatch_policy": 1}):
        response = client.patch(url, json=bad, headers=bearer(token))
        assert response.status_code == 422, (bad, response.text)
        error = response.json()["error"]
        assert error["code"] and error["message"] and next(iter(bad)) in error["message"] + str(error["details"])
    serving = client.get(url, headers=bearer(token)).json()["serving"]
    assert serving["target_p99_ms"] is None and serving["dispatch_policy"] == "default"


def test_publish_safetensors_versions_and_sha(client, maintainer):
    _, token = maintainer
    create_model(client, token, "m1")
    artifact = mlp_bytes()
    response = publish(client, token, "m1", artifact, manifest())
    assert response.status_code == 201, response.text
    v1 = response.json()
    assert v1["version"] == 1 and v1["stage"] == "none"
    assert v1["artifact_sha256"] == hashlib.sha256(artifact).hexdigest()
    assert v1["signature"]["inputs"][0]["shape"] == [-1, 4]
    storage_root = Path(os.environ["STORAGE_URL"].removeprefix("file://"))
    stored = list((storage_root / "models" / "m1").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == artifact
    v2 = publish(client, token, "m1", mlp_bytes(seed=1), manifest()).json()
    assert v2["version"] == 2
    listed = client.get("/api/v1/models/m1/versions", headers=bearer(token)).json()
    assert [v["version"] for v in listed] == [1, 2]


def test_mismatched_state_dict_is_422_naming_the_tensor(client, maintainer):
    _, token = maintainer
    create_model(client, token, "m2")
    wrong = mlp_bytes({"in_features": 5, "hidden": [8], "out_features": 3})
    response = publish(client, token, "m2", wrong, manifest())
    assert response.status_code == 422
    error = response.json()["error"]
    assert "0.weight" in json.dumps(error) or "weight" in error["message"]
    assert client.get("/api/v1/models/m2/versions", headers=bearer(token)).json() == []


def test_bad_manifests(client, maintainer):
    _, token = maintainer
    create_model(client, token, "m3")
    artifact = mlp_bytes()
    for bad, field in (("{not json", "manifest"), ('["x"]', "manifest"), (manifest(format="pickle"), "format"),
                       (json.dumps({"architecture": "nope", "config": {}}), "config"),
                       (manifest({"in_features": -1, "hidden": [], "out_features": 1}), "config"),
                       (manifest(signature={"inputs": "x"}), "signature")):
        response = publish(client, token, "m3", artifact, bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["details"][0]["field"] == field, response.text
    assert client.get("/api/v1/models/m3/versions", headers=bearer(token)).json() == []


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_is_refused_before_deserialising(client, maintainer, tmp_path):
    _, token = maintainer
    create_model(client, token, "m4")
    canary = tmp_path / "canary"
    payload = pickle.dumps(_Canary(str(canary)))
    checkpoint = io.BytesIO()
    torch.save({"x": _Canary(str(canary))}, checkpoint)
    for artifact in (payload, checkpoint.getvalue()):
        for fmt in ("safetensors", "torchscript", "torch_export", "pickle"):
            response = publish(client, token, "m4", artifact, manifest(format=fmt))
            assert response.status_code in (403, 422), response.text
    assert not canary.exists()
    assert client.get("/api/v1/models/m4/versions", headers=bearer(token)).json() == []


def test_code_artifacts_are_403_unless_enabled(client, maintainer, tmp_path):
    _, token = maintainer
    create_model(client, token, "m5")
    scripted = torch.jit.trace(build("mlp", MLP).eval(), torch.zeros(1, 4))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    sig = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
           "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]}
    response = publish(client, token, "m5", buffer.getvalue(), json.dumps({"format": "torchscript", "signature": sig}))
    assert response.status_code == 403
    assert "TORCHWIRE_ALLOW_CODE_ARTIFACTS" in response.json()["error"]["message"]


def test_publish_needs_ownership(client, make_user, maintainer):
    _, token = maintainer
    create_model(client, token, "m6", visibility="public")
    other = login(client, make_user("maintainer"))["access"]
    assert publish(client, other, "m6", mlp_bytes(), manifest()).status_code == 403
    assert publish(client, other, "does-not-exist", mlp_bytes(), manifest()).status_code == 404


def test_promotion_keeps_exactly_one_production(client, maintainer):
    _, token = maintainer
    create_model(client, token, "m7")
    for seed in range(3):
        assert publish(client, token, "m7", mlp_bytes(seed=seed), manifest()).status_code == 201

    def stages() -> dict[int, str]:
        listed = client.get("/api/v1/models/m7/versions", headers=bearer(token)).json()
        return {v["version"]: v["stage"] for v in listed}

    promote = "/api/v1/models/m7/versions/{}/promote"
    assert client.post(promote.format(1), json={"stage": "production"}, headers=bearer(token)).status_code == 200
    assert client.post(promote.format(2), json={"stage": "staging"}, headers=bearer(token)).status_code == 200
    assert stages() == {1: "production", 2: "staging", 3: "none"}
    assert client.post(promote.format(3), json={"stage": "production"}, headers=bearer(token)).status_code == 200
    assert stages() == {1: "archived", 2: "staging", 3: "production"}
    assert client.get("/api/v1/models/m7", headers=bearer(token)).json()["production_version"] == 3
    assert client.post(promote.format(3), json={"stage": "live"}, headers=bearer(token)).status_code == 422
    assert client.post(promote.format(9), json={"stage": "staging"}, headers=bearer(token)).status_code == 404
    assert stages()[3] == "production"


def test_architectures_listing(client, maintainer):
    _, token = maintainer
    body = client.get("/api/v1/architectures", headers=bearer(token)).json()
    names = {a["name"] for a in body["architectures"]}
    assert {"mlp", "cnn"} <= names
