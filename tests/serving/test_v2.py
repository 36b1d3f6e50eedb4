"""The V2 protocol, checked with the unmodified tritonclient[http] client and with raw bodies."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import bearer

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0], [3, 2, 1, 0]], dtype=np.float32)


def _client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(urlsplit(server.url).netloc, network_timeout=30, connection_timeout=10)


def _infer(client, name, token, array, binary, datatype="FP32", version=""):
    tensor = triton.InferInput("input", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    output = triton.InferRequestedOutput("output", binary_data=binary)
    return client.infer(name, [tensor], model_version=version, outputs=[output], headers=bearer(token))


def test_tritonclient_end_to_end(server, publish_model):
    model = publish_model("v2-mlp")
    client = _client(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    headers = bearer(model.token)
    assert client.is_model_ready("v2-mlp", headers=headers)
    assert not client.is_model_ready("v2-missing", headers=headers)
    meta = client.get_model_metadata("v2-mlp", headers=headers)
    assert meta["name"] == "v2-mlp" and meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    expected = np.array(model.expected(ROWS.tolist()), dtype=np.float32)
    for binary in (True, False):
        result = _infer(client, "v2-mlp", model.token, ROWS, binary)
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
        assert result.get_response()["model_version"] == "1"
    versioned = _infer(client, "v2-mlp", model.token, ROWS, True, version="1")
    np.testing.assert_allclose(versioned.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
    client.close()


def test_tritonclient_int64_input(server, publish_model):
    model = publish_model("v2-int")
    client = _client(server)
    ints = np.array([[1, 2, 3, 4], [-5, 6, 7, 8]], dtype=np.int64)
    expected = np.array(model.expected(ints.astype(np.float32).tolist()), dtype=np.float32)
    for binary in (True, False):
        result = _infer(client, "v2-int", model.token, ints, binary, datatype="INT64")
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
    client.close()


def test_tritonclient_errors_carry_the_server_message(server, publish_model):
    model = publish_model("v2-errors")
    client = _client(server)
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "v2-errors", model.token, np.zeros((2, 3), dtype=np.float32), True)
    assert "dimension 1 must be 4" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "v2-errors", "not-a-token", ROWS, True)
    assert info.value.status() == "401"
    client.close()


def test_raw_v2_errors_are_400_json(client, publish_model):
    model = publish_model("v2-raw")
    url = "/v2/models/v2-raw/infer"
    headers = bearer(model.token)

    def post(body, extra=None):
        response = client.post(url, content=body, headers={**headers, **(extra or {})})
        assert response.headers["content-type"].startswith("application/json")
        return response

    good = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ok = post(json.dumps(good).encode())
    assert ok.status_code == 200 and len(ok.json()["outputs"][0]["data"]) == 3
    low = post(json.dumps({**good, "parameters": {"priority": "low"}}).encode())
    assert low.status_code == 200 and low.json()["outputs"][0]["data"] == ok.json()["outputs"][0]["data"]
    cases = [
        (b"{nope", None, "malformed"),
        (json.dumps({"inputs": []}).encode(), None, "non-empty"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}).encode(),
         None, "BYTES"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}).encode(),
         None, "elements"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 16}}]}).encode() + b"\0" * 8,
         "header", "bytes"),
        (json.dumps({"inputs": [{"name": "input", "shape": [0, 4], "datatype": "FP32", "data": []}]}).encode(),
         None, "empty"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode(),
         None, "unknown input"),
        (json.dumps({**good, "parameters": {"priority": "urgent"}}).encode(), None, "priority"),
        (json.dumps({**good, "parameters": {"priority": 0}}).encode(), None, "priority"),
    ]
    for body, header, needle in cases:
        extra = None
        if header:
            extra = {"Inference-Header-Content-Length": str(body.index(b"\0"))}
        response = post(body, extra)
        assert response.status_code == 400, (needle, response.text)
        assert set(response.json()) == {"error"} and needle in response.json()["error"], (needle, response.text)
    assert post(json.dumps(good).encode(), {"Inference-Header-Content-Length": "abc"}).status_code == 400
    assert client.get(url, headers=headers).status_code == 405
    assert client.get("/v2/models/v2-raw/versions/x", headers=headers).status_code == 400
    assert client.get("/v2/models/v2-raw/versions/7", headers=headers).status_code == 404


def test_v2_auth_and_health(client, make_user, publish_model):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").status_code == 401
    model = publish_model("v2-private")
    client.patch("/api/v1/models/v2-private", json={"visibility": "private"}, headers=bearer(model.token))
    from tests.support import login

    other = login(client, make_user("member"))["access"]
    assert client.get("/v2/models/v2-private", headers=bearer(other)).status_code == 404
    body = client.get("/v2", headers=bearer(other)).json()
    assert body["name"] == "torchwire" and "binary_tensor_data" in body["extensions"]


