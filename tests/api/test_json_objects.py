"""app/api/parsing.py (`read_json_object`) and app/api/schemas.py: a JSON body is an object, read as its JSON types
say."""

from __future__ import annotations

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("body", [b"[null, null]", b"[]", b'"description"', b"5", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_refused_and_changes_nothing(client, make_user, body):
    token = login(client, make_user("maintainer"))["access"]
    created = client.post("/api/v1/models", json={"name": "parse-me", "description": "kept"}, headers=bearer(token))
    assert created.status_code == 201
    for method, path in (("PATCH", "/api/v1/models/parse-me"), ("POST", "/api/v1/auth/api-keys"),
                         ("POST", "/api/v1/models/parse-me/predict")):
        response = client.request(method, path, content=body,
                                  headers={**bearer(token), "Content-Type": "application/json"})
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["error"]["message"] == "request body must be a JSON object"
    assert client.get("/api/v1/models/parse-me", headers=bearer(token)).json()["description"] == "kept"
    assert client.get("/api/v1/auth/api-keys", headers=bearer(token)).json() == []


@pytest.mark.parametrize(("field", "value"), [
    ("max_batch_size", "8"), ("max_batch_size", True), ("max_batch_size", 8.5), ("max_delay_ms", False),
    ("max_delay_ms", "2.5"), ("visibility", 1),
])
def test_json_types_are_taken_as_they_are(client, make_user, field, value):
    token = login(client, make_user("maintainer"))["access"]
    assert client.post("/api/v1/models", json={"name": "typed"}, headers=bearer(token)).status_code == 201
    before = client.get("/api/v1/models/typed", headers=bearer(token)).json()
    response = client.patch("/api/v1/models/typed", json={field: value}, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field
    assert client.get("/api/v1/models/typed", headers=bearer(token)).json() == before
    # The same fields with their JSON types pass; an integer is a number too.
    ok = client.patch("/api/v1/models/typed", json={"max_batch_size": 8, "max_delay_ms": 2}, headers=bearer(token))
    assert ok.status_code == 200 and ok.json()["serving"]["max_delay_ms"] == 2.0
