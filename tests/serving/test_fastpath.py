"""app/serving/fastpath.py: the hot inference routes outside Django's request cycle.

The same requests go to the test server (fast path on) and to a second server with
TORCHWIRE_FAST_PATH=false (Django views); both must answer alike, good and bad requests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

from tests.support import Server, bearer, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
# Headers whose values legitimately differ between two servers or two calls.
VOLATILE = {"date", "server", "content-length", "x-request-id", "vary", "transfer-encoding"}


@pytest.fixture(scope="module")
def django_server(service_env: dict[str, str]) -> Iterator[Server]:
    srv = start_uvicorn({**service_env, "TORCHWIRE_FAST_PATH": "false"})
    yield srv
    srv.stop()


def _strip(body: object) -> object:
    """A body without what is new on every call (prediction ids, timings)."""
    if isinstance(body, dict):
        return {k: _strip(v) for k, v in body.items() if k not in ("prediction_id", "timing", "total_ms")}
    return body


def _same(fast: httpx.Response, slow: httpx.Response) -> None:
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert _strip(fast.json()) == _strip(slow.json()), (fast.text, slow.text)
    fast_headers = {k: v for k, v in fast.headers.items() if k not in VOLATILE}
    slow_headers = {k: v for k, v in slow.headers.items() if k not in VOLATILE}
    assert fast_headers == slow_headers
    assert fast.headers["x-request-id"]


def _both(server: Server, django_server: Server, method: str, path: str, **kwargs: object) -> httpx.Response:
    fast = httpx.request(method, server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]
    slow = httpx.request(method, django_server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]
    _same(fast, slow)
    return fast


def test_rest_predict_answers_as_django_does(server, django_server, client, make_user, publish_model):
    model = publish_model("fast-rest", seeds=(0, 1))
    auth = bearer(model.token)
    url = "/api/v1/models/fast-rest/predict"
    ok = _both(server, django_server, "POST", url, json={"inputs": ROWS}, headers=auth)
    assert ok.status_code == 200 and ok.json()["version"] == 2 and ok.json()["prediction_id"]
    assert _both(server, django_server, "POST", url, json={"inputs": {"input": ROWS}}, headers=auth).status_code == 200
    assert _both(server, django_server, "POST", url + "?version=1", json={"inputs": ROWS},
                 headers=auth).json()["version"] == 1
    cases = [
        (url + "?version=abc", {"json": {"inputs": ROWS}, "headers": auth}, 422),
        (url + "?version=9", {"json": {"inputs": ROWS}, "headers": auth}, 404),
        ("/api/v1/models/nope/predict", {"json": {"inputs": ROWS}, "headers": auth}, 404),
        (url, {"json": {"inputs": ROWS}}, 401),
        (url, {"json": {"inputs": ROWS}, "headers": {"Authorization": "Basic abc"}}, 401),
        (url, {"json": {"inputs": ROWS}, "headers": bearer("tw_not-a-key")}, 401),
        (url, {"json": {"inputs": [[1, 2, 3]]}, "headers": auth}, 422),
        (url, {"content": b'{"inputs": [[NaN, 1, 2, 3]]}', "headers": auth}, 422),
        (url, {"content": b'{"inputs": [[1, 2', "headers": auth}, 422),
        (url, {"content": b"[1, 2]", "headers": auth}, 422),
        (url, {"json": {"rows": ROWS}, "headers": auth}, 422),
        (url, {"json": {"inputs": ROWS}, "headers": {**auth, "X-Request-Timeout-Ms": "soon"}}, 422),
        (url, {"json": {"inputs": ROWS}, "headers": {**auth, "X-Request-Timeout-Ms": "0"}}, 422),
        (url, {"content": b'{"inputs": [' + b"[1,2,3,4]," * 1_000_000 + b"[1,2,3,4]]}", "headers": auth}, 413),
    ]
    for path, kwargs, status in cases:
        answer = _both(server, django_server, "POST", path, **kwargs)
        assert answer.status_code == status, (path, answer.text)
        assert set(answer.json()["error"]) == {"code", "message", "details"}, answer.text
    viewer = login(client, make_user("viewer"))["access"]
    assert _both(server, django_server, "POST", url, json={"inputs": ROWS}, headers=bearer(viewer)).status_code == 403
    # A GET on the route is Django's (405 in the envelope), whatever the fast path does with POSTs.
    assert httpx.get(server.url + url, headers=auth).status_code == 405


def test_v2_infer_answers_as_django_does(server, django_server, publish_model):
    model = publish_model("fast-v2")
    auth = bearer(model.token)
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                    "data": np.array(ROWS).ravel().tolist()}]}
    ok = _both(server, django_server, "POST", "/v2/models/fast-v2/infer", json=body, headers=auth)
    assert ok.json()["id"] == "r1" and ok.json()["parameters"]["prediction_id"]
    assert _both(server, django_server, "POST", "/v2/models/fast-v2/versions/1/infer", json=body,
                 headers=auth).status_code == 200
    wrong_shape = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1] * 6}]}
    cases = [
        ("/v2/models/fast-v2/versions/x/infer", {"json": body, "headers": auth}, 400),
        ("/v2/models/fast-v2/versions/7/infer", {"json": body, "headers": auth}, 404),
        ("/v2/models/nope/infer", {"json": body, "headers": auth}, 404),
        ("/v2/models/fast-v2/infer", {"json": body}, 401),
        ("/v2/models/fast-v2/infer", {"json": body, "headers": bearer("tw_not-a-key")}, 401),
        ("/v2/models/fast-v2/infer", {"json": wrong_shape, "headers": auth}, 400),
        ("/v2/models/fast-v2/infer", {"content": b"{", "headers": auth}, 400),
        ("/v2/models/fast-v2/infer", {"json": body, "headers": {**auth, "Inference-Header-Content-Length": "x"}}, 400),
        ("/v2/models/fast-v2/infer", {"json": body, "headers": {**auth, "Inference-Header-Content-Length": "9999"}},
         400),
        ("/v2/models/fast-v2/infer", {"content": b"{" + b" " * (9 * 1024 * 1024) + b"}", "headers": auth}, 413),
    ]
    for path, kwargs, status in cases:
        answer = _both(server, django_server, "POST", path, **kwargs)
        assert answer.status_code == status, (path, answer.text)
        assert set(answer.json()) == {"error"}, answer.text


def test_request_id_and_security_headers(server, publish_model):
    model = publish_model("fast-headers")
    response = httpx.post(server.url + "/api/v1/models/fast-headers/predict", json={"inputs": ROWS},
                          headers={**bearer(model.token), "X-Request-ID": "trace-123"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-123"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    garbage = httpx.post(server.url + "/api/v1/models/fast-headers/predict", json={"inputs": ROWS},
                         headers={**bearer(model.token), "X-Request-ID": "bad id\twith spaces"}, timeout=30)
    assert garbage.headers["x-request-id"] != "bad id\twith spaces" and len(garbage.headers["x-request-id"]) == 32


def test_host_outside_allowed_hosts_is_refused_by_django(server, publish_model):
    model = publish_model("fast-host")
    response = httpx.post(server.url + "/api/v1/models/fast-host/predict", json={"inputs": ROWS},
                          headers={**bearer(model.token), "Host": "evil.example"}, timeout=30)
    assert response.status_code == 400


def _metric(server: Server, prefix: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_client_that_disconnects_costs_no_compute(server, publish_model):
    """The request waits for company (max_delay_ms=1000); the client gives up after 0.2 s; its row is
    withdrawn and never computed, and the route keeps serving."""
    model = publish_model("fast-gone", max_batch_size=64, max_delay_ms=1000, dispatch_policy="fixed")
    url = server.url + "/api/v1/models/fast-gone/predict"
    assert httpx.post(url, json={"inputs": ROWS}, headers=bearer(model.token), timeout=30).status_code == 200
    rows_before = _metric(server, 'torchwire_batch_size_rows_sum{model="fast-gone"')
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"inputs": ROWS[:1]}, headers=bearer(model.token), timeout=0.2)
    cancelled = 'torchwire_inference_requests_total{model="fast-gone",protocol="rest",status="cancelled"'
    deadline = time.monotonic() + 5
    while _metric(server, cancelled) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(server, cancelled) == 1
    time.sleep(1.2)  # past the window the request would have waited for
    assert _metric(server, 'torchwire_batch_size_rows_sum{model="fast-gone"') == rows_before
    assert _metric(server, 'torchwire_http_requests_total{method="POST",route="/api/v1/models/<name>/predict",'
                           'status="499"') >= 1
    again = httpx.post(url, json={"inputs": ROWS}, headers=bearer(model.token), timeout=30)
    assert again.status_code == 200 and len(again.json()["outputs"]) == 2


def test_v2_binary_request_on_the_fast_path(server, publish_model):
    model = publish_model("fast-binary")
    array = np.array(ROWS, dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": array.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    response = httpx.post(server.url + "/v2/models/fast-binary/infer", content=header + array.tobytes(),
                          headers={**bearer(model.token), "Inference-Header-Content-Length": str(len(header))},
                          timeout=30)
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:json_length])
    out = np.frombuffer(response.content[json_length:], dtype=np.float32).reshape(meta["outputs"][0]["shape"])
    with torch.no_grad():
        expected = model.module(torch.tensor(array)).numpy()
    assert np.allclose(out, expected, atol=1e-5)
