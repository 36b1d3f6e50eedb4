"""Model names over HTTP: matched whole (no trailing newline sneaks in), and one namespace whose taken names
answer the same 409 from POST /models and POST /jobs/train, whether or not the caller can see the model."""

from __future__ import annotations

import pytest

from tests.datasets.test_api import GOOD, upload
from tests.serverlog import no_traceback
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

BAD_NAMES = ["x\n", "x\r\n", "\nx", "x\x00", "x\ty", "x ", "X", "-x", "x" * 65, "", "ß"]


def test_names_with_control_characters_are_refused(client, make_user, server):
    maintainer = login(client, make_user("maintainer"))["access"]
    member = login(client, make_user("member"))["access"]
    dataset_id = upload(client, member, GOOD).json()["id"]
    with no_traceback(server.log):
        for name in BAD_NAMES:
            response = client.post("/api/v1/models", json={"name": name}, headers=bearer(maintainer))
            assert response.status_code == 422, (name, response.text)
            train = client.post("/api/v1/jobs/train", headers=bearer(member), json={
                "dataset_id": dataset_id, "target": "income", "task": "regression", "model_name": name})
            assert train.status_code == 422, (name, train.text)
            assert train.json()["error"]["details"][0]["field"] == "model_name", train.text
    assert client.get("/api/v1/models", headers=bearer(maintainer)).json() == []
    assert client.get("/api/v1/jobs", headers=bearer(member)).json() == []


def test_a_taken_name_answers_one_409_wherever_it_is_asked(client, make_user):
    owner = login(client, make_user("maintainer"))["access"]
    for name, visibility in (("hidden-name", "private"), ("open-name", "public")):
        assert client.post("/api/v1/models", json={"name": name, "visibility": visibility},
                           headers=bearer(owner)).status_code == 201
    member = login(client, make_user("member"))["access"]
    other_maintainer = login(client, make_user("maintainer"))["access"]
    dataset_id = upload(client, member, GOOD).json()["id"]
    for name in ("hidden-name", "open-name"):
        created = client.post("/api/v1/models", json={"name": name}, headers=bearer(other_maintainer))
        trained = client.post("/api/v1/jobs/train", headers=bearer(member), json={
            "dataset_id": dataset_id, "target": "income", "task": "regression", "model_name": name})
        assert created.status_code == trained.status_code == 409, (created.text, trained.text)
        assert created.json() == trained.json() == {
            "error": {"code": "conflict", "message": f"a model named {name!r} already exists", "details": None}}
    # Nothing was created or queued, and the private model stays invisible.
    assert client.get("/api/v1/jobs", headers=bearer(member)).json() == []
    assert client.get("/api/v1/models/hidden-name", headers=bearer(member)).status_code == 404
