"""Hostile and malformed requests to the inference routes (REST predict, V2): nesting deeper than the
JSON reader allows, numbers that overflow, version segments that only look like numbers, and record
bodies past the row limit. Each is sent to the test server (fast path) and to one with the fast path
off (Django views): both answer the same single JSON 4xx, and neither logs a traceback."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import off_loop
from tests.jobs.conftest import classification_csv, upload_csv
from tests.support import Account, Server, bearer, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["upload_csv"]  # a fixture of the job tests

DEEP = b"[" * 10_000 + b"]" * 10_000
VOLATILE = {"date", "server", "content-length", "x-request-id", "vary", "transfer-encoding"}


@pytest.fixture(scope="module")
def django_server(service_env: dict[str, str]) -> Iterator[Server]:
    srv = start_uvicorn({**service_env, "TORCHWIRE_FAST_PATH": "false"})
    yield srv
    srv.stop()


@pytest.fixture
def no_traceback(server: Server, django_server: Server) -> Iterator[None]:
    """Client mistakes leave no traceback in either server's log. Waits for the servers' monitoring
    recorder to write what the test's requests left it first: that is logged too, and a flush of the
    test database while it writes can deadlock with it."""
    offsets = [(srv, srv.log_size()) for srv in (server, django_server)]
    yield
    settle(server)
    for srv, offset in offsets:
        logged = srv.log_since(offset)
        assert "Traceback" not in logged, logged[-6000:]


def settle(server: Server) -> None:
    from django.conf import settings

    time.sleep(settings.PREDICTION_FLUSH_SECONDS + 1)


def _strip(body: object) -> object:
    if isinstance(body, dict):
        return {k: _strip(v) for k, v in body.items() if k not in ("prediction_id", "timing")}
    return body


def both(server: Server, django_server: Server, method: str, path: str, **kwargs: object) -> httpx.Response:
    """The fast path's answer, after checking that Django's is the same JSON with the same status."""
    fast = httpx.request(method, server.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
    slow = httpx.request(method, django_server.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
    for response in (fast, slow):
        assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    assert fast.status_code == slow.status_code, (fast.text[:500], slow.text[:500])
    assert _strip(fast.json()) == _strip(slow.json())
    assert {k: v for k, v in fast.headers.items() if k not in VOLATILE} == {
        k: v for k, v in slow.headers.items() if k not in VOLATILE}
    return fast


def nested(levels: int, inner: str = "1") -> bytes:
    return ("[" * levels + inner + "]" * levels).encode()


# --- nesting ------------------------------------------------------------------------------------


DEEP_BODIES = [
    b'{"inputs": ' + DEEP + b"}",
    DEEP,
    b'{"inputs": [[NaN, 1, 2, 3]], "extra": ' + DEEP + b"}",  # orjson refuses the NaN; json.loads would recurse
    b'{"inputs": ' + nested(65) + b"}",
    b'{"inputs": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"}",
]


def test_rest_predict_refuses_documents_nested_too_deep(server, django_server, publish_model, no_traceback):
    model = publish_model("hostile-deep-rest")
    for body in DEEP_BODIES:
        response = both(server, django_server, "POST", "/api/v1/models/hostile-deep-rest/predict", content=body,
                        headers={**bearer(model.token), "content-type": "application/json"})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_json"
        assert response.json()["error"]["message"] == "request body is refused: JSON nested deeper than 64 levels"


def test_rest_predict_reads_64_levels_then_the_signature_decides(server, django_server, publish_model,
                                                                 no_traceback):
    model = publish_model("hostile-64-rest")
    response = both(server, django_server, "POST", "/api/v1/models/hostile-64-rest/predict",
                    content=b'{"inputs": ' + nested(63) + b"}",
                    headers={**bearer(model.token), "content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input", response.text


@pytest.mark.parametrize("version", [None, "1"])
def test_v2_infer_refuses_documents_nested_too_deep(server, django_server, publish_model, no_traceback, version):
    model = publish_model("hostile-deep-v2")
    path = "/v2/models/hostile-deep-v2" + (f"/versions/{version}" if version else "") + "/infer"
    auth = bearer(model.token)
    for body in (DEEP, b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": '
                 + nested(5_000) + b"}]}", b'{"nan": NaN, "inputs": ' + DEEP + b"}"):
        response = both(server, django_server, "POST", path, content=body, headers=auth)
        assert response.status_code == 400
        assert response.json() == {"error": "request JSON is refused: JSON nested deeper than 64 levels"}
    # The binary extension: the JSON part is read with the same limits.
    header = b'{"x": ' + DEEP + b"}"
    response = both(server, django_server, "POST", path, content=header + b"\x00" * 16,
                    headers={**auth, "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400 and "deeper than 64 levels" in response.json()["error"]


# --- numbers ------------------------------------------------------------------------------------


def test_v2_shapes_whose_element_count_overflows_are_refused(server, django_server, publish_model, no_traceback):
    model = publish_model("hostile-shape")
    auth = bearer(model.token)
    for shape in ([2**32, 2**32], [2**63], [0, 2**62], [1] * 40):
        body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": []}]}
        response = both(server, django_server, "POST", "/v2/models/hostile-shape/infer", json=body, headers=auth)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("input 'input': shape")
    # tritonclient's binary extension: an empty tensor whose other dimension is past int64
    header = json.dumps({"inputs": [{"name": "input", "shape": [0, 2**63], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    response = both(server, django_server, "POST", "/v2/models/hostile-shape/infer", content=header,
                    headers={**auth, "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400
    assert response.json() == {"error": "input 'input': shape describes more than 2147483647 elements"}


NOT_VERSIONS = ["\u00b2", "\u0661", "1" * 5001, "0", "-1", "1.0", "2147483648", "99999999999", "+1", "1_0", " 1"]


def test_v2_version_segments_that_are_not_versions_are_400_json(server, django_server, publish_model,
                                                                no_traceback):
    model = publish_model("hostile-version-v2")
    auth = bearer(model.token)
    infer = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    for version in NOT_VERSIONS:
        base = f"/v2/models/hostile-version-v2/versions/{quote(version)}"
        for method, path, body in (("POST", base + "/infer", infer), ("GET", base, None),
                                   ("GET", base + "/ready", None)):
            response = both(server, django_server, method, path, json=body, headers=auth)
            assert response.status_code == 400, (path[:80], response.text[:300])
            assert response.json()["error"].startswith("model version must be an integer from 1 to 2147483647")
    # The version that exists still answers.
    assert both(server, django_server, "POST", "/v2/models/hostile-version-v2/versions/1/infer", json=infer,
                headers=auth).status_code == 200


def test_rest_version_query_that_is_not_a_version_is_422(server, django_server, publish_model, no_traceback):
    model = publish_model("hostile-version-rest")
    for version in NOT_VERSIONS:
        path = f"/api/v1/models/hostile-version-rest/predict?version={quote(version)}"
        response = both(server, django_server, "POST", path, json={"inputs": [[1, 2, 3, 4]]},
                        headers=bearer(model.token))
        assert response.status_code == 422, response.text[:300]
        error = response.json()["error"]
        assert error["code"] == "validation_error" and error["details"][0]["loc"] == ["query", "version"]
        assert "model version must be an integer from 1 to 2147483647" in error["message"]


# --- records ------------------------------------------------------------------------------------


@pytest.fixture
def records_model(client: httpx.Client, make_user: Callable[..., Account], upload_csv: Callable[..., int],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A model trained on raw records (the job runs in this process, as `manage.py train` runs it, and is
    not sent to Celery, where a worker of another test could claim it later): its name and a token of
    its owner."""
    from app.jobs import services

    monkeypatch.setattr(services, "task_dispatch", lambda *args, **kwargs: "")
    owner = make_user("member")
    token = login(client, owner)["access"]
    dataset_id = upload_csv(token, classification_csv(rows=200))
    name = f"records-{uuid.uuid4().hex[:8]}"

    def train() -> str:
        from app.accounts.models import User
        from app.jobs.runner import job_run
        from app.jobs.services import job_train_create

        job = job_train_create(owner=User.objects.get(pk=owner.pk), dataset_id=dataset_id, target="label",
                               task="classification", model_name=name, features=None,
                               hyperparameters={"epochs": 2, "hidden": [8]}, promote=True)
        return job_run(job_id=job.pk)

    assert off_loop(train) == "succeeded"
    return name, token


def _record(i: int) -> dict[str, object]:
    return {"x1": (i % 97) / 31, "x2": -(i % 89) / 29, "city": ["Oslo", "Bergen", "Paris"][i % 3], "flag": i % 2 == 0}


def test_records_past_the_row_limit_are_refused_before_they_are_converted(server, django_server, records_model,
                                                                         no_traceback):
    name, token = records_model
    rows = [_record(i) for i in range(2000)]  # the default max_queue is 1024
    rows[1500]["x1"] = "not a number"  # converting first would answer 422 for this row
    response = both(server, django_server, "POST", f"/api/v1/models/{name}/predict", json={"inputs": rows},
                    headers=bearer(token))
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and error["details"] == {"rows": 2000, "max_rows": 1024}
    # 7 MB of records: refused as quickly, without converting a row.
    big = json.dumps({"inputs": [_record(i) for i in range(90_000)]}).encode()
    assert len(big) > 7_000_000
    response = httpx.post(f"{server.url}/api/v1/models/{name}/predict", content=big, timeout=60,
                          headers={**bearer(token), "content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["details"]["rows"] == 90_000


def test_a_large_records_body_is_answered_whole(server, django_server, records_model, no_traceback):
    """Past OFFLOAD_BYTES the body is parsed and converted on a worker thread; the answer is the same."""
    from app.serving.calls import OFFLOAD_BYTES

    name, token = records_model
    rows = [_record(i) for i in range(1000)]
    assert len(json.dumps({"inputs": rows})) > OFFLOAD_BYTES
    response = both(server, django_server, "POST", f"/api/v1/models/{name}/predict", json={"inputs": rows},
                    headers=bearer(token))
    assert response.status_code == 200, response.text[:300]
    outputs = response.json()["outputs"]
    assert len(outputs) == 1000 and all(o["label"] in ("high", "low") for o in outputs)
    small = both(server, django_server, "POST", f"/api/v1/models/{name}/predict", json={"inputs": rows[:3]},
                 headers=bearer(token))
    assert [o["label"] for o in small.json()["outputs"]] == [o["label"] for o in outputs[:3]]


def test_a_binary_header_length_that_is_not_digits_is_400(server, django_server, publish_model, no_traceback):
    model = publish_model("hostile-header")
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    for value in (b"\xb2", b"1" * 5001, b"-1", b"1_0", b"+8"):
        response = both(server, django_server, "POST", "/v2/models/hostile-header/infer", content=header.encode(),
                        headers={**bearer(model.token), "Inference-Header-Content-Length": value})
        assert response.status_code == 400
        assert response.json() == {"error": "Inference-Header-Content-Length must be an integer"}
