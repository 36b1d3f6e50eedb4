"""GET /api/v1/system/overview: the deployment's figures as JSON, for admins only."""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def test_overview_reports_routes_sockets_pool_and_queues(server, client, make_user):
    admin = login(client, make_user("admin"))["access"]
    for _ in range(3):
        assert client.get("/api/v1/me", headers=bearer(admin)).status_code == 200
    with connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", admin], open_timeout=20):
        response = client.get("/api/v1/system/overview", headers=bearer(admin))
    assert response.status_code == 200, response.text
    body = response.json()
    routes = {(r["route"], r["method"]): r for r in body["http"]}
    me = next(r for (route, method), r in routes.items() if route.endswith("/me") and method == "GET")
    assert me["count"] >= 3 and 0 < me["p50_ms"] <= me["p99_ms"] and me["mean_ms"] > 0
    assert sum(body["websockets_open"].values()) >= 1
    assert body["celery_queues"] and all(n >= 0 for n in body["celery_queues"].values())
    assert isinstance(body["db_pool"], dict) and body["collectors_up"]


def test_overview_is_for_admins(client, make_user):
    member = login(client, make_user("maintainer"))["access"]
    assert client.get("/api/v1/system/overview", headers=bearer(member)).status_code == 403
    assert client.get("/api/v1/system/overview").status_code == 401
