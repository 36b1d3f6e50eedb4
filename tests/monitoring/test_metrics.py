"""/metrics: Prometheus text with the serving metrics; open on loopback, admin-only when forwarded."""

from __future__ import annotations

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def _value(text: str, prefix: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_batches_and_rejections(client, publish_model):
    model = publish_model("metrics-mlp")
    for _ in range(3):
        assert client.post("/api/v1/models/metrics-mlp/predict", json={"inputs": [[1, 2, 3, 4]]},
                           headers=bearer(model.token)).status_code == 200
    assert client.post("/api/v1/models/metrics-mlp/predict", json={"inputs": [[1, 2, 3]]},
                       headers=bearer(model.token)).status_code == 422
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = 'torchwire_inference_requests_total{model="metrics-mlp",protocol="rest",status="ok",version="1"}'
    assert _value(text, ok) == 3
    assert _value(text, 'torchwire_inference_requests_total{model="metrics-mlp",protocol="rest",'
                        'status="invalid_input"') == 1
    assert _value(text, 'torchwire_batch_size_rows_count{model="metrics-mlp",version="1"}') >= 1
    assert _value(text, 'torchwire_batch_size_rows_sum{model="metrics-mlp",version="1"}') == 3
    for name in ("torchwire_batch_queue_wait_seconds_bucket", "torchwire_batch_compute_seconds_bucket",
                 "torchwire_inference_latency_seconds_bucket", "torchwire_batch_queue_rows",
                 "torchwire_loaded_models", "torchwire_loaded_model_bytes"):
        assert name in text, name
    assert _value(text, 'torchwire_loaded_model_bytes{model="metrics-mlp",version="1"}') > 0


def test_metrics_behind_a_proxy_need_admin(client, make_user):
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert client.get("/metrics", headers=forwarded).status_code == 401
    member = login(client, make_user("maintainer"))["access"]
    assert client.get("/metrics", headers={**forwarded, **bearer(member)}).status_code == 403
    admin = login(client, make_user("admin"))["access"]
    assert client.get("/metrics", headers={**forwarded, **bearer(admin)}).status_code == 200
