"""POST /api/v1/models/{name}/predict through the real server."""

from __future__ import annotations

import concurrent.futures
import math

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]


def _close(a, b, tol=1e-5):
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for ra, rb in zip(a, b, strict=True)
               for x, y in zip(ra, rb, strict=True))


def test_predict_bare_list_and_named_inputs(client, publish_model):
    model = publish_model("rest-basic")
    response = client.post("/api/v1/models/rest-basic/predict", json={"inputs": ROWS}, headers=bearer(model.token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "rest-basic" and body["version"] == 1
    assert _close(body["outputs"], model.expected(ROWS))
    assert body["timing"]["total_ms"] > 0
    named = client.post("/api/v1/models/rest-basic/predict", json={"inputs": {"input": ROWS}},
                        headers=bearer(model.token))
    assert named.status_code == 200, named.text
    outputs = named.json()["outputs"]
    assert isinstance(outputs, dict) and _close(next(iter(outputs.values())), model.expected(ROWS))


def test_versions_and_production(client, publish_model):
    model = publish_model("rest-versions", seeds=(0, 1), promote=False)
    response = client.post("/api/v1/models/rest-versions/predict", json={"inputs": ROWS}, headers=bearer(model.token))
    assert response.status_code == 404 and "production" in response.json()["error"]["message"]
    v1 = client.post("/api/v1/models/rest-versions/predict?version=1", json={"inputs": ROWS},
                     headers=bearer(model.token))
    assert v1.status_code == 200 and v1.json()["version"] == 1
    v2 = client.post("/api/v1/models/rest-versions/predict?version=2", json={"inputs": ROWS},
                     headers=bearer(model.token))
    assert v2.status_code == 200 and v2.json()["version"] == 2
    assert _close(v2.json()["outputs"], model.expected(ROWS))
    assert not _close(v1.json()["outputs"], v2.json()["outputs"])
    missing = client.post("/api/v1/models/rest-versions/predict?version=9", json={"inputs": ROWS},
                          headers=bearer(model.token))
    assert missing.status_code == 404


def test_access_rules(client, make_user, publish_model):
    model = publish_model("rest-access")
    viewer = login(client, make_user("viewer"))["access"]
    response = client.post("/api/v1/models/rest-access/predict", json={"inputs": ROWS}, headers=bearer(viewer))
    assert response.status_code == 403
    owner_token = model.token
    client.patch("/api/v1/models/rest-access", json={"visibility": "private"}, headers=bearer(owner_token))
    # No wait for the catalog's TTL: the process that commits a change drops its entry at once
    # (app/serving/catalog.py), and the test server is one process.
    member = login(client, make_user("member"))["access"]
    response = client.post("/api/v1/models/rest-access/predict", json={"inputs": ROWS}, headers=bearer(member))
    assert response.status_code == 404
    assert client.post("/api/v1/models/rest-access/predict", json={"inputs": ROWS}).status_code == 401


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([[1, 2, 3]], "dimension 1"),
        ([1, 2, 3, 4], "dimensions"),
        ([[[1, 2, 3, 4]]], "dimensions"),
        ([], "empty"),
        ([[1, 2, 3, 4], [1, 2]], "rectangular"),
        ([["a", "b", "c", "d"]], "numbers"),
        ([[None, 1, 2, 3]], "numbers"),
        ({"nope": [[1, 2, 3, 4]]}, "unknown input"),
        ({}, "missing input"),
        ("text", "nested list"),
        ([[1e39, 0, 0, 0]], "infinite"),
    ],
)
def test_bad_inputs_are_422_and_name_the_problem(client, publish_model, inputs, needle):
    model = publish_model(f"rest-bad-{abs(hash(needle + str(inputs))) % 10**8}")
    response = client.post(f"/api/v1/models/{model.name}/predict", json={"inputs": inputs},
                           headers=bearer(model.token))
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"], response.text


def test_nan_malformed_json_and_too_large(client, publish_model):
    model = publish_model("rest-nan", max_queue=1_000_000)  # so the element limit is the one reached
    url = "/api/v1/models/rest-nan/predict"
    headers = {**bearer(model.token), "content-type": "application/json"}
    nan = client.post(url, content=b'{"inputs": [[NaN, 1, 2, 3]]}', headers=headers)
    assert nan.status_code == 422 and "NaN" in nan.json()["error"]["message"]
    bad = client.post(url, content=b'{"inputs": [[1, 2, 3, 4]', headers=headers)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_json"
    missing = client.post(url, json={"rows": [[1, 2, 3, 4]]}, headers=bearer(model.token))
    assert missing.status_code == 422
    many = b'{"inputs": [' + b",".join([b"[1,2,3,4]"] * 500_000) + b"]}"
    too_many = client.post(url, content=many, headers=headers)
    assert too_many.status_code == 422 and "exceed the limit" in too_many.json()["error"]["message"]
    huge = b'{"inputs": [' + b",".join([b"[1,2,3,4]"] * 1_000_000) + b"]}"
    too_large = client.post(url, content=huge, headers=headers)
    assert too_large.status_code == 413, too_large.text


def test_timeout_header(client, publish_model):
    model = publish_model("rest-timeout")
    url = "/api/v1/models/rest-timeout/predict"
    bad = client.post(url, json={"inputs": ROWS}, headers={**bearer(model.token), "X-Request-Timeout-Ms": "soon"})
    assert bad.status_code == 422
    ok = client.post(url, json={"inputs": ROWS}, headers={**bearer(model.token), "X-Request-Timeout-Ms": "5000"})
    assert ok.status_code == 200


def test_concurrent_callers_each_get_their_own_rows(client, server, publish_model):
    import httpx

    model = publish_model("rest-concurrent", max_delay_ms=20)
    requests = [[[float(i), float(i) / 2, -float(i), 1.0]] * (1 + i % 3) for i in range(40)]

    def call(rows):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            response = c.post("/api/v1/models/rest-concurrent/predict", json={"inputs": rows},
                              headers=bearer(model.token))
        assert response.status_code == 200, response.text
        return rows, response.json()["outputs"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for rows, outputs in pool.map(call, requests):
            assert len(outputs) == len(rows)
            assert _close(outputs, model.expected(rows), tol=1e-4)


def test_serving_settings_apply_to_a_loaded_model(client, publish_model):
    model = publish_model("rest-settings")
    url = "/api/v1/models/rest-settings/predict"
    assert client.post(url, json={"inputs": ROWS}, headers=bearer(model.token)).status_code == 200
    patched = client.patch("/api/v1/models/rest-settings", json={"max_queue": 1}, headers=bearer(model.token))
    assert patched.status_code == 200
    # Two rows can never fit a one-row queue: refused at once, by the already loaded batcher.
    response = client.post(url, json={"inputs": ROWS}, headers=bearer(model.token))
    assert response.status_code == 413, response.text
    assert client.post(url, json={"inputs": ROWS[:1]}, headers=bearer(model.token)).status_code == 200
    client.patch("/api/v1/models/rest-settings", json={"max_queue": 64}, headers=bearer(model.token))
    assert client.post(url, json={"inputs": ROWS}, headers=bearer(model.token)).status_code == 200


def test_priority_header(client, publish_model):
    model = publish_model("rest-priority")
    url = "/api/v1/models/rest-priority/predict"
    for value in ("low", "HIGH", "normal"):
        response = client.post(url, json={"inputs": ROWS}, headers={**bearer(model.token), "X-Priority": value})
        assert response.status_code == 200, response.text
        assert _close(response.json()["outputs"], model.expected(ROWS))
    for bad in ("urgent", "", "1"):
        response = client.post(url, json={"inputs": ROWS}, headers={**bearer(model.token), "X-Priority": bad})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"] == "X-Priority must be one of high, normal, low"


def test_stats_report_what_the_batcher_chose(client, make_user, publish_model):
    model = publish_model("rest-stats", max_batch_size=16, max_delay_ms=2, target_p99_ms=500)
    url = "/api/v1/models/rest-stats"
    assert client.post(url + "/predict", json={"inputs": ROWS}, headers=bearer(model.token)).status_code == 200
    response = client.get(url + "/stats", headers=bearer(model.token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "rest-stats" and body["process"]
    (version,) = body["versions"]
    assert version["version"] == 1 and version["dispatch_policy"] == "adaptive"
    assert version["target_p99_ms"] == 500 and version["max_batch_size"] == 16
    assert 1 <= version["effective_max_batch_size"] <= 16 and 0 <= version["effective_max_delay_ms"] <= 2
    # A change of the serving settings reaches the loaded batcher: at its next request in the process
    # that committed it (other processes within the catalog's TTL).
    client.patch(url, json={"dispatch_policy": "fixed", "target_p99_ms": None}, headers=bearer(model.token))
    assert client.post(url + "/predict", json={"inputs": ROWS}, headers=bearer(model.token)).status_code == 200
    (version,) = client.get(url + "/stats", headers=bearer(model.token)).json()["versions"]
    assert version["dispatch_policy"] == "fixed" and version["target_p99_ms"] is None
    assert (version["effective_max_batch_size"], version["effective_max_delay_ms"]) == (16, 2)
    # What is exported to Prometheus too.
    metrics = client.get("/metrics").text
    assert 'torchwire_batch_effective_max_rows{model="rest-stats",version="1"} 16.0' in metrics
    # Like the model itself: a caller who cannot see it gets 404.
    client.patch(url, json={"visibility": "private"}, headers=bearer(model.token))
    stranger = login(client, make_user("member"))["access"]
    assert client.get(url + "/stats", headers=bearer(stranger)).status_code == 404
