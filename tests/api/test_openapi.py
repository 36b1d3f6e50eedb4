"""app/api/openapi.py: the OpenAPI document declares every error an operation answers, with the envelope."""

from __future__ import annotations

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

ENVELOPE = {"$ref": "#/components/schemas/ErrorOut"}


@pytest.fixture
def document(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_every_error_status_carries_the_envelope_schema(document):
    schemas = document["components"]["schemas"]
    assert schemas["ErrorOut"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "details"}
    for path, method, operation in _operations(document):
        errors = {int(s): r for s, r in operation["responses"].items() if int(s) >= 400}
        assert errors, (method, path)
        for status, response in errors.items():
            assert response["content"] == {"application/json": {"schema": ENVELOPE}}, (method, path, status)
            assert response["description"], (method, path, status)


def test_the_common_errors_follow_from_what_an_operation_takes(document):
    for path, method, operation in _operations(document):
        declared = {int(s) for s in operation["responses"]}
        takes_input = bool(operation.get("parameters")) or "requestBody" in operation
        expected = {401} if operation.get("security") else set()
        expected |= {404} if "{" in path else set()
        expected |= {422} if takes_input else set()
        expected |= {413} if "requestBody" in operation else set()
        assert expected <= declared, (method, path, sorted(expected - declared))


def test_what_the_server_answers_is_declared(client, document, make_user):
    """A sample of real refusals, each checked against the operation's declared statuses."""
    member = login(client, make_user("member"))["access"]
    maintainer = login(client, make_user("maintainer"))["access"]
    assert client.post("/api/v1/models", json={"name": "declared-1"}, headers=bearer(maintainer)).status_code == 201
    answers = [
        ("/api/v1/me", "get", client.get("/api/v1/me")),
        ("/api/v1/models", "post", client.post("/api/v1/models", json={"name": "declared-2"}, headers=bearer(member))),
        ("/api/v1/models", "post",
         client.post("/api/v1/models", json={"name": "declared-1"}, headers=bearer(maintainer))),
        ("/api/v1/models", "post", client.post("/api/v1/models", json=[1], headers=bearer(maintainer))),
        ("/api/v1/models/{name}", "get", client.get("/api/v1/models/nope", headers=bearer(member))),
        ("/api/v1/auth/token", "post", client.post("/api/v1/auth/token", json={"username": "x", "password": "y"})),
        ("/api/v1/jobs", "get", client.get("/api/v1/jobs?limit=many", headers=bearer(member))),
        ("/api/v1/jobs", "get", client.get("/api/v1/jobs?limit=0", headers=bearer(member))),
        ("/api/v1/jobs", "get", client.get("/api/v1/jobs?limit=1001", headers=bearer(member))),
        ("/api/v1/system/workers", "get", client.get("/api/v1/system/workers", headers=bearer(member))),
    ]
    seen = set()
    for path, method, response in answers:
        assert response.status_code >= 400, response.text
        declared = document["paths"][path][method]["responses"]
        assert str(response.status_code) in declared, (method, path, response.status_code, sorted(declared))
        assert set(response.json()["error"]) == {"code", "message", "details"}
        seen.add(response.status_code)
    assert seen == {401, 403, 404, 409, 422}
