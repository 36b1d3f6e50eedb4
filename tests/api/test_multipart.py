"""Uploads (app/api): who may upload is checked before the body is parsed, and a malformed multipart body is
one 400 JSON error, never a 500, on every multipart route."""

from __future__ import annotations

import io

import pytest

from tests.registry.test_api import manifest, mlp_bytes
from tests.serverlog import no_traceback
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

# (content type, body) pairs Django's multipart parser refuses.
MALFORMED = [
    ("multipart/form-data", b"abc"),  # no boundary
    ("multipart/form-data; boundary=", b"abc"),
    ("multipart/form-data; boundary=\u00e9t\u00e9", b"abc"),  # non-ASCII
]


@pytest.fixture
def routes(client, make_user):
    """A public model owned by a maintainer, and the two multipart routes."""
    owner = login(client, make_user("maintainer"))["access"]
    assert client.post("/api/v1/models", json={"name": "uploads", "visibility": "public"},
                       headers=bearer(owner)).status_code == 201
    return owner, ["/api/v1/datasets", "/api/v1/models/uploads/versions"]


def post_raw(client, path: str, token: str, content_type: str, body: bytes):
    headers = {**bearer(token), "content-type": content_type.encode()}
    return client.post(path, headers=headers, content=body)


def test_malformed_multipart_is_400(client, server, routes):
    owner, paths = routes
    with no_traceback(server.log):
        for path in paths:
            for content_type, body in MALFORMED:
                response = post_raw(client, path, owner, content_type, body)
                assert response.status_code == 400, (path, content_type, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_multipart" and "multipart" in error["message"], error
    assert client.get("/api/v1/models/uploads/versions", headers=bearer(owner)).json() == []
    assert client.get("/api/v1/datasets", headers=bearer(owner)).json() == []


def test_too_many_parts_is_400(client, server, routes):
    owner, paths = routes
    files = [("file", (f"f{i}.csv", io.BytesIO(b"a\n1\n"), "text/csv")) for i in range(101)]  # limit: 100
    with no_traceback(server.log):
        for path in paths:
            response = client.post(path, headers=bearer(owner), files=files)
            assert response.status_code == 400, (path, response.text)
            assert "DATA_UPLOAD_MAX_NUMBER_FILES" in response.json()["error"]["message"]


def test_permission_is_checked_before_the_body_is_parsed(client, server, make_user, routes):
    _, (datasets, versions) = routes
    viewer = login(client, make_user("viewer"))["access"]
    member = login(client, make_user("member"))["access"]
    # A body the parser would refuse with 400: the caller is refused first, so the body was never parsed.
    with no_traceback(server.log):
        for token, path in ((viewer, datasets), (viewer, versions), (member, versions)):
            response = post_raw(client, path, token, *MALFORMED[0])
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
        # A model the caller cannot see is a 404, as everywhere, also before the body.
        assert post_raw(client, "/api/v1/models/nobody-has-this/versions", member, *MALFORMED[0]).status_code == 404
        # A well-formed upload from them is refused the same way.
        files = {"artifact": ("m.safetensors", io.BytesIO(mlp_bytes()), "application/octet-stream")}
        response = client.post(versions, headers=bearer(member), files=files, data={"manifest": manifest()})
        assert response.status_code == 403, response.text
    # The member may upload datasets: their malformed body reaches the parser.
    assert post_raw(client, datasets, member, *MALFORMED[0]).status_code == 400
