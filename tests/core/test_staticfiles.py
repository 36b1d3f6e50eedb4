"""app/core/staticfiles.py on the development server: a path that names no static file is a 404."""

from __future__ import annotations

import pytest

from tests.serverlog import no_traceback

PATHS = [
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/admin/..%2f..%2f..%2fsettings.py",
    "/static/%2fetc%2fpasswd",
    "/static/..%5c..%5cetc%5cpasswd",
    "/static/a%00b",
    "/static/" + "a" * 5000,
    "/static/no-such-file.css",
]


@pytest.mark.parametrize("path", PATHS)
def test_paths_outside_the_static_roots_are_404(client, server, path):
    with no_traceback(server.log):
        response = client.get(path)
    assert response.status_code == 404, response.text[:500]
    assert "root:" not in response.text


def test_a_static_file_is_served(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200 and "body" in response.text
