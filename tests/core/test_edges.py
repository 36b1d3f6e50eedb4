"""app/core/edges.py: what each edge answers for each kind of error, without a server."""

import json

import psycopg
import pytest

from app.core import edges
from app.core.errors import Conflict, NotFound
from inference.errors import (
    ArchitectureError,
    ArtifactForbidden,
    DatatypeError,
    DeadlineExceeded,
    ErrorKind,
    InferenceError,
    InputError,
    ModelNotFound,
    QueueFull,
    RequestTooLarge,
    ShuttingDown,
    V2Error,
)


class Cancelled(InferenceError):
    """As the trainer's cancellation (tabular/ moves; the kind is what counts)."""

    kind = ErrorKind.CONFLICT
    code = "training_cancelled"

# (error, REST status, V2 status): a client's mistake in an inference request is 422 on /api, 400 on V2.
CASES = [
    (InputError("x", "must be a number"), 422, 400),
    (V2Error("bad document"), 422, 400),
    (ArchitectureError("unknown architecture"), 422, 422),
    (ArtifactForbidden("torchscript runs code", reason="code_artifact"), 403, 403),
    (ModelNotFound("no such model"), 404, 404),
    (Cancelled("cancelled after 3 epochs"), 409, 409),
    (RequestTooLarge("too many rows"), 413, 413),
    (ShuttingDown("draining"), 503, 503),
    (DeadlineExceeded("too late"), 504, 504),
]


def _body(response) -> dict:
    return json.loads(response.content)


@pytest.mark.parametrize(("error", "rest", "v2"), CASES, ids=lambda c: getattr(c, "code", str(c)))
def test_inference_errors_map_per_edge(error, rest, v2):
    response = edges.rest_error(error, where="test")
    assert response.status_code == rest
    assert _body(response)["error"]["code"] == error.code
    assert _body(response)["error"]["message"] == error.message
    response = edges.v2_error(error, where="test")
    assert response.status_code == v2
    assert _body(response) == {"error": error.message}
    assert edges.ws_error(error, request_id="7", where="test") == {"id": "7", "code": error.code,
                                                                   "error": error.message}


def test_every_kind_has_a_status_on_every_edge():
    assert set(edges.REST_STATUS) == set(ErrorKind) == set(edges.V2_STATUS)


def test_datatype_errors_are_the_callers_mistake():
    error = DatatypeError("BYTES is not supported")
    assert edges.rest_error(error, where="test").status_code == 422
    assert edges.v2_error(error, where="test").status_code == 400


def test_queue_full_says_when_to_retry():
    error = QueueFull(2.2)
    for response in (edges.rest_error(error, where="test"), edges.v2_error(error, where="test")):
        assert response.status_code == 503
        assert response["Retry-After"] == "3"


def test_api_errors_keep_their_status_and_code():
    assert edges.rest_error(Conflict("taken"), where="test").status_code == 409
    assert _body(edges.rest_error(NotFound("gone"), where="test"))["error"]["code"] == "not_found"
    assert edges.v2_error(NotFound("gone"), where="test").status_code == 404
    assert edges.ws_error(NotFound("gone"), request_id=None, where="test") == {
        "id": None, "code": "not_found", "error": "gone"}


def test_an_unreachable_database_is_503_with_retry_after():
    error = psycopg.OperationalError("connection refused")
    for response in (edges.rest_error(error, where="test"), edges.v2_error(error, where="test")):
        assert response.status_code == 503
        assert int(response["Retry-After"]) >= 1
    assert edges.ws_error(error, request_id="1", where="test")["code"] == "database_unavailable"


def test_a_bug_is_500_without_its_message(caplog):
    error = RuntimeError("password is hunter2")
    rest = edges.rest_error(error, where="POST /x")
    assert rest.status_code == 500 and "hunter2" not in rest.content.decode()
    v2 = edges.v2_error(error, where="POST /x")
    assert v2.status_code == 500 and _body(v2) == {"error": "internal server error"}
    assert edges.ws_error(error, request_id="9", where="ws") == {
        "id": "9", "code": "internal_error", "error": "internal server error"}
    assert any("unhandled error on POST /x" in r.getMessage() for r in caplog.records)
