"""Promotion history and rollback over HTTP, and the architecture's expected state dict."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db import transaction

from tests.registry.test_api import create_model, manifest, mlp_bytes, publish
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def maintainer(client, make_user):
    account = make_user("maintainer")
    return account, login(client, account)["access"]


def _model_with_versions(client, token: str, count: int) -> str:
    name = f"h-{uuid.uuid4().hex[:8]}"
    assert create_model(client, token, name).status_code == 201
    for seed in range(count):
        assert publish(client, token, name, mlp_bytes(seed=seed), manifest()).status_code == 201
    return name


def _promote(client, token: str, name: str, version: int, stage: str = "production", reason: str = ""):
    return client.post(f"/api/v1/models/{name}/versions/{version}/promote", json={"stage": stage, "reason": reason},
                       headers=bearer(token))


def _stages(client, token: str, name: str) -> dict[int, str]:
    listed = client.get(f"/api/v1/models/{name}/versions", headers=bearer(token)).json()
    return {v["version"]: v["stage"] for v in listed}


def _history(client, token: str, name: str) -> list[dict]:
    response = client.get(f"/api/v1/models/{name}/history", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_every_stage_change_is_recorded_with_actor_and_reason(client, maintainer):
    account, token = maintainer
    name = _model_with_versions(client, token, 2)
    assert _promote(client, token, name, 1, reason="first release").status_code == 200
    assert _promote(client, token, name, 2, "staging").status_code == 200
    assert _promote(client, token, name, 2, reason="better accuracy").status_code == 200

    rows = _history(client, token, name)
    # Newest first; the archiving of version 1 is recorded with the promotion that caused it.
    assert [(r["version"], r["from_stage"], r["to_stage"], r["action"]) for r in rows] == [
        (2, "staging", "production", "promote"),
        (1, "production", "archived", "replaced"),
        (2, "none", "staging", "promote"),
        (1, "none", "production", "promote"),
    ]
    assert {r["actor"] for r in rows} == {account.username}
    assert rows[0]["reason"] == "better accuracy" and rows[1]["reason"] == "replaced by version 2"
    assert rows[3]["reason"] == "first release"
    assert rows[0]["at"] >= rows[3]["at"]
    limited = client.get(f"/api/v1/models/{name}/history?limit=1", headers=bearer(token)).json()
    assert [r["id"] for r in limited] == [rows[0]["id"]]
    assert client.get(f"/api/v1/models/{name}/history?limit=0", headers=bearer(token)).status_code == 422


def test_history_rows_roll_back_with_the_promotion(client, maintainer):
    """The rows are written in the promotion's own transaction: a promotion that does not commit
    leaves neither a stage change nor a history row."""
    from app.accounts.models import User
    from app.registry.models import ModelVersion, StageChange
    from app.registry.services import model_version_promote

    account, token = maintainer
    name = _model_with_versions(client, token, 1)
    version = ModelVersion.objects.select_related("model").get(model__name=name, number=1)
    actor = User.objects.get(pk=account.pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        model_version_promote(version=version, stage="production", actor=actor, reason="never committed")
        assert StageChange.objects.filter(model=version.model).count() == 1
        raise RuntimeError("abort")
    assert StageChange.objects.filter(model=version.model).count() == 0
    assert _stages(client, token, name) == {1: "none"}


def test_rollback_walks_back_through_production_versions(client, maintainer):
    _, token = maintainer
    name = _model_with_versions(client, token, 3)
    rollback = f"/api/v1/models/{name}/rollback"

    missing = client.post(rollback, json={}, headers=bearer(token))
    assert missing.status_code == 409, missing.text
    assert missing.json()["error"]["code"] == "conflict"
    for number in (1, 2, 3):
        assert _promote(client, token, name, number).status_code == 200
    assert client.post(rollback, json={"reason": "v3 misbehaves"}, headers=bearer(token)).json() | {"changes": []} == {
        "model": name, "version": 2, "from_version": 3, "changes": []}
    assert _stages(client, token, name) == {1: "archived", 2: "production", 3: "archived"}
    assert client.get(f"/api/v1/models/{name}", headers=bearer(token)).json()["production_version"] == 2

    second = client.post(rollback, json={}, headers=bearer(token))
    assert second.status_code == 200 and (second.json()["version"], second.json()["from_version"]) == (1, 2)
    assert [(c["version"], c["to_stage"], c["action"]) for c in second.json()["changes"]] == [
        (2, "archived", "rollback"), (1, "production", "rollback")]
    assert second.json()["changes"][0]["reason"] == "rollback from version 2"
    # Version 1 was the first in production: nothing before it.
    assert client.post(rollback, json={}, headers=bearer(token)).status_code == 409
    assert _stages(client, token, name) == {1: "production", 2: "archived", 3: "archived"}

    rows = _history(client, token, name)
    assert [(r["version"], r["to_stage"], r["action"]) for r in rows[:4]] == [
        (1, "production", "rollback"), (2, "archived", "rollback"),
        (2, "production", "rollback"), (3, "archived", "rollback")]
    assert rows[3]["reason"] == "v3 misbehaves"


def test_rollback_restores_the_last_production_version_when_none_is_in_production(client, maintainer):
    _, token = maintainer
    name = _model_with_versions(client, token, 1)
    assert _promote(client, token, name, 1).status_code == 200
    assert _promote(client, token, name, 1, "archived").status_code == 200
    response = client.post(f"/api/v1/models/{name}/rollback", json={}, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.json()["from_version"]) == (1, None)
    assert _stages(client, token, name) == {1: "production"}


def test_rollback_and_history_need_the_right_user(client, make_user, maintainer):
    _, token = maintainer
    name = _model_with_versions(client, token, 2)
    for number in (1, 2):
        assert _promote(client, token, name, number).status_code == 200
    public = client.patch(f"/api/v1/models/{name}", json={"visibility": "public"}, headers=bearer(token))
    assert public.status_code == 200
    member = login(client, make_user("member"))["access"]
    other = login(client, make_user("maintainer"))["access"]
    for caller in (member, other):
        assert client.post(f"/api/v1/models/{name}/rollback", json={}, headers=bearer(caller)).status_code == 403
        assert _promote(client, caller, name, 1).status_code == 403
        # A public model's history is readable like its versions.
        assert len(_history(client, caller, name)) == 3
    assert _stages(client, token, name) == {1: "archived", 2: "production"}
    private = _model_with_versions(client, token, 1)
    assert client.get(f"/api/v1/models/{private}/history", headers=bearer(member)).status_code == 404
    assert client.post(f"/api/v1/models/{private}/rollback", json={}, headers=bearer(member)).status_code == 404
    assert client.post(f"/api/v1/models/{name}/rollback", json={"reason": "x" * 501},
                       headers=bearer(token)).status_code == 422


async def test_promotion_and_rollback_are_announced_on_the_model_topic(client, maintainer):
    from realtime.bus import replay

    _, token = maintainer
    name = _model_with_versions(client, token, 2)
    assert _promote(client, token, name, 1, reason="go").status_code == 200
    assert _promote(client, token, name, 2).status_code == 200
    assert client.post(f"/api/v1/models/{name}/rollback", json={}, headers=bearer(token)).status_code == 200
    events = await replay(f"model:{name}", 0)
    assert events is not None
    seen = [(e.type, json.loads(e.text)["data"]) for e in events if e.type in ("promoted", "rolled_back")]
    assert [(t, d["version"]) for t, d in seen] == [("promoted", 1), ("promoted", 2), ("rolled_back", 1)]
    assert seen[0][1]["reason"] == "go" and seen[0][1]["from_stage"] == "none"
    assert seen[2][1]["from_version"] == 2


def test_rollback_moves_serving_traffic(client, maintainer):
    """Unversioned calls follow the rollback (the serving catalog expires within a second)."""
    _, token = maintainer
    name = _model_with_versions(client, token, 2)
    for number in (1, 2):
        assert _promote(client, token, name, number).status_code == 200
    predict = f"/api/v1/models/{name}/predict"
    body = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}
    assert client.post(predict, json=body, headers=bearer(token)).json()["version"] == 2
    assert client.post(f"/api/v1/models/{name}/rollback", json={}, headers=bearer(token)).status_code == 200
    deadline = time.monotonic() + 20
    served = 2
    while time.monotonic() < deadline and served != 1:
        response = client.post(predict, json=body, headers=bearer(token))
        assert response.status_code == 200, response.text
        served = response.json()["version"]
        time.sleep(0.2)
    assert served == 1


def test_state_dict_of_an_architecture(client, maintainer):
    _, token = maintainer
    config = {"in_features": 4, "hidden": [8], "out_features": 3}
    response = client.get("/api/v1/architectures/mlp/state-dict", params={"config": json.dumps(config)},
                          headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["config"]["activation"] == "relu"  # defaults filled in
    tensors = {t["name"]: (t["dtype"], t["shape"]) for t in body["tensors"]}
    import safetensors.torch

    from inference.architectures import build

    real = safetensors.torch.load(safetensors.torch.save(build("mlp", config).state_dict()))
    assert tensors == {k: ("F32", list(v.shape)) for k, v in real.items()}
    assert body["signature"]["inputs"][0]["shape"][-1] == 4
    posted = client.post("/api/v1/architectures/mlp/state-dict", json={"config": config}, headers=bearer(token))
    assert posted.status_code == 200 and posted.json() == body
    half = client.post("/api/v1/architectures/mlp/state-dict", json={"config": config | {"dtype": "float16"}},
                       headers=bearer(token)).json()
    assert {t["dtype"] for t in half["tensors"]} == {"F16"}


def test_state_dict_errors(client, maintainer):
    _, token = maintainer
    url = "/api/v1/architectures/{}/state-dict"
    assert client.get(url.format("nope"), headers=bearer(token)).status_code == 404
    for raw in ("not json", "[1]", json.dumps({"in_features": 0, "out_features": 2})):
        response = client.get(url.format("mlp"), params={"config": raw}, headers=bearer(token))
        assert response.status_code == 422, raw
        assert response.json()["error"]["details"][0]["field"] == "config"
    assert client.get(url.format("mlp")).status_code == 401
