"""app/api/parsing.py: every JSON body under /api/v1 is read with the same depth and size limits, and
a refused one answers one JSON error (422 or 413) with no traceback in the server log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.test_api import mlp_bytes, publish
from tests.support import Server, bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 10_000 + "]" * 10_000
REFUSED = "request body is refused: JSON nested deeper than 64 levels"


@pytest.fixture
def no_traceback(server: Server) -> Iterator[None]:
    offset = server.log_size()
    yield
    logged = server.log_since(offset)
    assert "Traceback" not in logged, logged[-6000:]


@pytest.fixture
def maintainer_token(client: httpx.Client, make_user) -> str:
    return login(client, make_user("maintainer"))["access"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/v1/models", '{"name": ' + DEEP + "}"),
    ("POST", "/api/v1/models", '{"name": "deep", "description": "x", "visibility": "public", "extra": ' + DEEP + "}"),
    ("POST", "/api/v1/models", '{"nan": NaN, "name": ' + DEEP + "}"),  # json.loads would recurse here
    ("PATCH", "/api/v1/models/nope", '{"sharing": ' + "[" * 65 + "]" * 65 + "}"),
    ("POST", "/api/v1/jobs/train", '{"dataset_id": 1, "target": "y", "task": "regression", "model_name": "m", '
                                   '"hyperparameters": {"hidden": ' + DEEP + "}}"),
    ("POST", "/api/v1/models/nope/feedback", '{"prediction_id": "p", "label": ' + DEEP + "}"),
    ("POST", "/api/v1/auth/token", DEEP),
], ids=["create", "create-extra", "behind-nan", "patch-65", "train-hyperparameters", "feedback", "token"])
def test_deep_bodies_are_refused_before_any_route_looks_at_them(client, maintainer_token, no_traceback, method,
                                                               path, body):
    response = client.request(method, path, content=body.encode(),
                              headers={**bearer(maintainer_token), "content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["error"]["code"] == "invalid_json"
    assert response.json()["error"]["message"] == REFUSED


def test_64_levels_are_read_and_handled_as_usual(client, maintainer_token, no_traceback):
    body = '{"name": "sixty-four", "extra": ' + "[" * 63 + "]" * 63 + "}"  # unknown keys are ignored here
    response = client.post("/api/v1/models", content=body.encode(),
                           headers={**bearer(maintainer_token), "content-type": "application/json"})
    assert response.status_code == 201 and response.json()["name"] == "sixty-four", response.text


def test_a_body_over_the_limit_without_content_length_is_413(client, server, maintainer_token, no_traceback):
    """Django checks DATA_UPLOAD_MAX_MEMORY_SIZE against Content-Length only; a chunked body of any size
    reached json.loads. The parser measures what it reads."""
    from django.conf import settings

    filler = b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big",'
        for start in range(0, len(filler), 1 << 20):
            yield filler[start:start + (1 << 20)]
        yield b'"visibility": "public"}'

    response = httpx.post(server.url + "/api/v1/models", content=chunks(), timeout=60,
                          headers={**bearer(maintainer_token), "content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"] == {"code": "payload_too_large", "details": None,
                                        "message": "request body is larger than the limit for this endpoint"}
    assert client.get("/api/v1/models/big", headers=bearer(maintainer_token)).status_code == 404


@pytest.mark.parametrize(("manifest", "message"), [
    ('{"format": "safetensors", "architecture": "mlp", "config": ' + DEEP + "}",
     "invalid manifest: refused: JSON nested deeper than 16 levels"),
    ('{"format": "safetensors", "nan": NaN, "config": ' + DEEP + "}",
     "invalid manifest: refused: JSON nested deeper than 16 levels"),
    (json.dumps({"format": "safetensors", "architecture": "mlp", "config": {"in_features": 4, "hidden": [8],
                                                                          "out_features": 3}, "pad": "x" * 300_000}),
     "invalid manifest: refused: JSON document is larger than the limit of 262144 bytes"),
], ids=["deep", "deep-behind-nan", "large"])
def test_publish_refuses_deep_or_large_manifests(client, maintainer_token, no_traceback, manifest, message):
    assert client.post("/api/v1/models", json={"name": "manifest-limits"},
                       headers=bearer(maintainer_token)).status_code == 201
    response = publish(client, maintainer_token, "manifest-limits", mlp_bytes(), manifest)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["error"]["message"] == message
    assert response.json()["error"]["details"][0]["field"] == "manifest"
