"""Live serving figures: two real serving processes, their parts summed into one point a second, kept for
GET /api/v1/models/{name}/stats/live and published on ``serving:<name>``."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from app.serving import livestats
from tests.support import Server, bearer, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]


@pytest.fixture(scope="module")
def second_server(service_env: dict[str, str]) -> Iterator[Server]:
    srv = start_uvicorn(service_env)
    yield srv
    srv.stop()


def _hammer(url: str, name: str, token: str, seconds: float) -> int:
    sent = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            response = http.post(f"/api/v1/models/{name}/predict", json={"inputs": ROWS}, headers=bearer(token))
            assert response.status_code == 200, response.text
            sent += 1
    return sent


def _points(client: httpx.Client, name: str, token: str) -> list[dict]:
    response = client.get(f"/api/v1/models/{name}/stats/live?minutes=5", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == name and body["topic"] == f"serving:{name}"
    return body["points"]


def test_points_sum_every_process_and_are_published(server, second_server, client, publish_model):
    model = publish_model("live-stats", max_delay_ms=2)
    with connect(f"{server.ws_url}/ws/v1/events", subprotocols=["bearer", model.token], open_timeout=20) as ws:
        ws.send(json.dumps({"op": "subscribe", "topic": "serving:live-stats"}))
        assert json.loads(ws.recv(10))["type"] == "subscribed"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_hammer, srv.url, model.name, model.token, 3.0)
                       for srv in (server, second_server, server, second_server)]
            sent = sum(f.result() for f in futures)
        published: list[dict] = []
        deadline = time.monotonic() + 15
        points = _points(client, model.name, model.token)
        while sum(p["requests_per_s"] for p in points) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
            points = _points(client, model.name, model.token)
        while time.monotonic() < deadline and sum(p["requests_per_s"] for p in published) < sent:
            message = json.loads(ws.recv(5))
            if message.get("type") == "serving.stats":
                published.append(message["data"])
    assert sum(p["requests_per_s"] for p in points) == sent  # every request counted once, in one point
    assert [p["t"] for p in points] == sorted({p["t"] for p in points})  # one point per second
    assert any(p["processes"] == 2 for p in points), points
    busy = [p for p in points if p["requests_per_s"] > 0]
    assert all(p["p50_ms"] is not None and 0 < p["p50_ms"] <= p["p99_ms"] for p in busy), busy
    assert all(p["mean_batch_size"] is not None and p["mean_batch_size"] >= 1 for p in busy)
    assert all(0 < p["busy_share"] <= 1 for p in busy)
    assert sum(p["rows_per_s"] for p in points) == 2 * sent
    assert [{k: v for k, v in p.items() if k != "model"} for p in published] == points
    assert all(p["model"] == "live-stats" for p in published)


def test_live_stats_answers_and_refusals(client, make_user, publish_model):
    model = publish_model("live-quiet")
    response = client.get("/api/v1/models/live-quiet/stats/live", headers=bearer(model.token))
    assert response.status_code == 200 and response.json()["points"] == []
    for minutes in ("0", "61", "x"):
        bad = client.get(f"/api/v1/models/live-quiet/stats/live?minutes={minutes}", headers=bearer(model.token))
        assert bad.status_code == 422 and bad.json()["error"]["code"], bad.text
    missing = client.get("/api/v1/models/nope-none/stats/live", headers=bearer(model.token))
    assert missing.status_code == 404
    assert client.get("/api/v1/models/live-quiet/stats/live").status_code == 401
    client.patch("/api/v1/models/live-quiet", json={"visibility": "private"}, headers=bearer(model.token))
    time.sleep(1.2)  # the serving catalog caches access for up to a second
    stranger = login(client, make_user("member"))["access"]
    assert client.get("/api/v1/models/live-quiet/stats/live", headers=bearer(stranger)).status_code == 404


def test_merge_sums_parts_and_reads_quantiles_from_the_summed_buckets():
    fast = {livestats._bucket(1.0): 98}
    slow = {livestats._bucket(100.0): 2}
    point = livestats.merge(7, [
        {"requests": 98, "latency": fast, "batches": 10, "batch_rows": 90, "busy_s": 0.5, "queue_peak": 3,
         "rejected": {"queue_full": 1}, "errors": {}, "effective_max_batch_size": 16},
        {"requests": 3, "latency": slow, "batches": 2, "batch_rows": 10, "busy_s": 0.9, "queue_peak": 4,
         "rejected": {"queue_full": 2, "deadline": 1}, "errors": {"timeout": 1}, "effective_max_batch_size": 32},
    ])
    assert point["t"] == 7 and point["processes"] == 2 and point["requests_per_s"] == 101
    assert 0.9 < point["p50_ms"] < 1.1 and 90 < point["p99_ms"] < 110
    assert point["mean_batch_size"] == round(100 / 12, 2)
    assert point["busy_share"] == 0.7 and point["queue_depth"] == 7
    assert point["rejections"] == {"queue_full": 3, "deadline": 1} and point["errors"] == {"timeout": 1}
    assert point["effective_max_batch_size"] == 32
