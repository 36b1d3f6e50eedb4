from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from inference import jsonio
from inference.datatypes import Datatype
from inference.errors import V2Error
from inference.signature import Signature
from inference.v2 import (
    decode_infer_document,
    decode_infer_request,
    encode_infer_response,
    error_body,
    model_metadata,
)

RNG = np.random.default_rng(0)


def sample(datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
    dtype = datatype.numpy_dtype
    if datatype is Datatype.BOOL:
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return RNG.standard_normal(shape).astype(dtype)


def triton_body(
    arrays: dict[str, np.ndarray], binary: bool | dict[str, bool] = True, **kwargs: object
) -> tuple[bytes, int | None]:
    inputs = []
    for name, array in arrays.items():
        item = InferInput(name, list(array.shape), str(Datatype.__members__[_dt(array)]))
        item.set_data_from_numpy(array, binary_data=binary if isinstance(binary, bool) else binary[name])
        inputs.append(item)
    body, header_length = InferenceServerClient.generate_request_body(inputs, **kwargs)
    return (body.encode() if isinstance(body, str) else body), header_length


def _dt(array: np.ndarray) -> str:
    from inference.datatypes import datatype_of

    return datatype_of(array.dtype).value


@pytest.mark.parametrize("datatype", list(Datatype))
@pytest.mark.parametrize("binary", [True, False])
def test_decodes_what_tritonclient_sends(datatype: Datatype, binary: bool) -> None:
    array = sample(datatype, (3, 4))
    body, header_length = triton_body({"x": array}, binary=binary)
    assert (header_length is not None) == binary
    request = decode_infer_request(body, header_length)
    assert request.inputs["x"].dtype == datatype.numpy_dtype
    np.testing.assert_array_equal(request.inputs["x"], array)


def test_binary_layout_is_json_then_inputs_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1, 0]], dtype=np.int64)
    c = np.array([[True, False, True]])
    body, header_length = triton_body({"a": a, "b": b, "c": c}, binary={"a": True, "b": False, "c": True})
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert [i["name"] for i in header["inputs"]] == ["a", "b", "c"]
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 24}
    assert header["inputs"][1]["data"] == [1, 0]
    assert body[header_length:] == a.tobytes() + c.tobytes()
    request = decode_infer_request(body, header_length)
    assert list(request.inputs) == ["a", "b", "c"]
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    np.testing.assert_array_equal(request.inputs["c"], c)


def test_request_fields_id_timeout_and_outputs() -> None:
    x = np.zeros((1, 2), dtype=np.float32)
    body, header_length = triton_body(
        {"x": x},
        outputs=[InferRequestedOutput("p", binary_data=False), InferRequestedOutput("q", binary_data=True)],
        request_id="req-7",
        timeout=250_000,
    )
    request = decode_infer_request(body, header_length)
    assert request.id == "req-7"
    assert request.timeout_seconds == pytest.approx(0.25)
    assert request.output_selection(["q", "p", "r"]) == (["p", "q"], {"q"})


def test_no_requested_outputs_means_all_binary_from_tritonclient() -> None:
    body, header_length = triton_body({"x": np.zeros((1, 2), dtype=np.float32)})
    request = decode_infer_request(body, header_length)
    assert request.binary_data_output is True
    assert request.output_selection(["y", "z"]) == (["y", "z"], {"y", "z"})
    plain = decode_infer_request(
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode(), None
    )
    assert plain.output_selection(["y"]) == (["y"], set())
    assert plain.timeout_seconds is None and plain.id is None


def test_json_data_may_be_nested_or_flat() -> None:
    doc = {
        "inputs": [
            {"name": "n", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
            {"name": "f", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        ]
    }
    request = decode_infer_request(json.dumps(doc).encode(), None)
    np.testing.assert_array_equal(request.inputs["n"], [[1, 2], [3, 4]])
    assert request.inputs["n"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["f"], [[1, 2], [3, 4]])


@pytest.mark.parametrize("datatype", list(Datatype))
def test_response_parses_with_tritonclient(datatype: Datatype) -> None:
    y = sample(datatype, (2, 3))
    z = sample(datatype, (2, 1))
    for binary in ({"y"}, True, False, set()):
        body, header_length = encode_infer_response("iris", "3", "abc", {"y": y, "z": z}, binary)
        assert (header_length is not None) == bool(binary)
        result = InferResult.from_response_body(body, header_length=header_length)
        response = result.get_response()
        assert response["model_name"] == "iris" and response["model_version"] == "3" and response["id"] == "abc"
        for name, array in (("y", y), ("z", z)):
            decoded = result.as_numpy(name)
            assert decoded.dtype == array.dtype and decoded.shape == array.shape
            np.testing.assert_array_equal(decoded, array)


def test_response_binary_layout() -> None:
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    z = np.array([7], dtype=np.int64)
    body, header_length = encode_infer_response("m", None, None, {"y": y, "z": z}, {"y", "z"})
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert "model_version" not in header and "id" not in header
    assert header["outputs"][0] == {
        "name": "y",
        "datatype": "FP32",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 16},
    }
    assert body[header_length:] == y.tobytes() + struct.pack("<q", 7)


def test_round_trip_through_our_own_codec() -> None:
    x = sample(Datatype.FP16, (5, 2))
    body, header_length = encode_infer_response("m", "1", None, {"x": x}, True)
    # A response is not a request, but its tensors use the same layout; re-wrap it as one.
    header = json.loads(body[:header_length])
    header["inputs"] = header.pop("outputs")
    head = json.dumps(header).encode()
    request = decode_infer_request(head + body[header_length:], len(head))
    np.testing.assert_array_equal(request.inputs["x"], x)


def binary_doc(size: int, shape: list[int], datatype: str = "FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}]}
    ).encode()


MALFORMED = [
    (b"{", None, "malformed"),
    (b"[]", None, "JSON object"),
    (b'{"inputs": []}', None, "non-empty list"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither 'data'"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', None, "BYTES"),
    (b'{"inputs": [{"name": "x", "datatype": "BF16", "shape": [1], "data": [1]}]}', None, "BF16"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]}', None, "rectangular"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}', None, "needs 3"),
    (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1.5]}]}', None, "floating-point"),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
        b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
        None,
        "appears twice",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": '
        b'{"shared_memory_region": "r"}}]}',
        None,
        "shared memory",
    ),
    (b'{"id": 5, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', None, "'id'"),
    (
        b'{"parameters": {"timeout": "soon"}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], '
        b'"data": [1]}]}',
        None,
        "microseconds",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], '
        b'"outputs": [{"name": "y", "parameters": {"classification": 3}}]}',
        None,
        "classification",
    ),
    (binary_doc(8, [2]), None, "binary_data_size"),  # binary input without the header length
    (binary_doc(8, [2]) + b"\x00" * 8, 10_000, "body has"),
    (binary_doc(12, [2]) + b"\x00" * 12, len(binary_doc(12, [2])), "takes 8 bytes"),
    (binary_doc(8, [2]) + b"\x00" * 4, len(binary_doc(8, [2])), "ends after 4 of its 8"),
    (binary_doc(8, [2]) + b"\x00" * 12, len(binary_doc(8, [2])), "4 bytes of binary data"),
    (binary_doc(2, [2], "BOOL") + b"\x00\x02", len(binary_doc(2, [2], "BOOL")), "0 or 1"),
    # Shapes whose element count overflows 64 bits, or that numpy cannot hold even when empty.
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4294967296, 4294967296], "data": []}]}', None,
     "more than 2147483647 elements"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 4611686018427387904], "data": []}]}', None,
     "more than 2147483647 elements"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [18446744073709551616], "data": []}]}', None,
     "non-negative integers"),  # past 64 bits: orjson reads a float
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [' + b"1," * 40 + b'1], "data": [1]}]}', None,
     "at most 32"),
    (binary_doc(0, [0, 2**63]) , len(binary_doc(0, [0, 2**63])), "more than 2147483647 elements"),
    (binary_doc(0, [2**62, 4]), len(binary_doc(0, [2**62, 4])), "more than 2147483647 elements"),
    (binary_doc(2**70, [2]) + b"\x00" * 8, len(binary_doc(2**70, [2])), "non-negative integer"),  # a float
    # Python ints past a float's range, which only the standard library's reading produces (NaN elsewhere
    # in the document sends it there).
    (b'{"x": NaN, "parameters": {"timeout": 1' + b"0" * 400 + b'}, "inputs": [{"name": "x", "datatype": "FP32", '
     b'"shape": [1], "data": [1]}]}', None, "microseconds"),
    (b'{"x": NaN, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1' + b"0" * 400 + b'], "data": [1]}]}',
     None, "more than 2147483647 elements"),
    (b'{"x": NaN, ' + binary_doc(10**400, [2])[1:] + b"\x00" * 8, len(binary_doc(10**400, [2])) + 10,
     "binary_data_size is out of range"),
    (b'{"inputs": [' + b"[" * 5000 + b"]" * 5000 + b"]}", None, "deeper than 64 levels"),
    (b'{"x": NaN, "inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "deeper than 64 levels"),
]


@pytest.mark.parametrize(("body", "header_length", "message"), MALFORMED)
def test_malformed_requests_are_refused(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(V2Error, match=message) as err:
        decode_infer_request(body, header_length)
    assert err.value.kind == "invalid"


def _parsed(body: bytes, header_length: int | None) -> tuple[object, memoryview | None] | None:
    """A malformed body as a caller that parsed its JSON (with `inference.jsonio`) would pass it; None
    when there is nothing to pass (the JSON does not parse, or the header length does not fit the body)."""
    if header_length is not None and header_length > len(body):
        return None
    try:
        document = jsonio.loads(body if header_length is None else body[:header_length])
    except ValueError:
        return None
    return document, None if header_length is None else memoryview(body)[header_length:]


@pytest.mark.parametrize(
    ("body", "header_length", "message"), [case for case in MALFORMED if _parsed(case[0], case[1]) is not None]
)
def test_parsed_json_is_refused_like_the_body(body: bytes, header_length: int | None, message: str) -> None:
    """The same checks and messages when the caller parsed the JSON (the websocket consumer does)."""
    parsed = _parsed(body, header_length)
    assert parsed is not None
    with pytest.raises(V2Error, match=message) as err:
        decode_infer_document(*parsed)
    assert err.value.kind == "invalid"


SCALAR = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4)
          | st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, -1, 0, 10**400]))
DIM = st.integers(0, 3) | st.sampled_from([0, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 10**400, -1])
SHAPE = st.lists(DIM, max_size=4) | st.lists(DIM | SCALAR, max_size=3) | SCALAR
DATA = st.lists(st.integers(0, 1), max_size=6) | st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4),
                                                               max_leaves=12)
DATATYPE = st.sampled_from(list(Datatype)) | st.sampled_from(["BYTES", "BF16", "fp32", ""]) | SCALAR
PARAMETERS = st.fixed_dictionaries({}, optional={
    "binary_data_size": st.integers(-1, 16) | SCALAR, "timeout": SCALAR, "binary_data_output": SCALAR,
    "binary_data": SCALAR, "classification": SCALAR}) | SCALAR
# Mostly well-formed tensors with hostile numbers, some with anything in any field.
TENSOR = st.fixed_dictionaries({"name": st.sampled_from(["x", "y"]), "datatype": st.sampled_from(list(Datatype)),
                                "shape": st.lists(DIM, max_size=4), "data": DATA}) | st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["x", "y"]) | SCALAR, "datatype": DATATYPE, "shape": SHAPE, "data": DATA,
                  "parameters": PARAMETERS}) | SCALAR
DOCUMENT = st.fixed_dictionaries({"inputs": st.lists(TENSOR, min_size=1, max_size=2)}, optional={
    "id": st.text(max_size=3) | SCALAR, "parameters": PARAMETERS,
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x", "y"])}, optional={
        "parameters": PARAMETERS}), max_size=2) | SCALAR}) | st.fixed_dictionaries({}, optional={
    "inputs": st.lists(TENSOR, max_size=2) | SCALAR, "id": SCALAR}) | SCALAR


@st.composite
def binary_request(draw: st.DrawFn) -> tuple[bytes, int]:
    """A binary-extension body: tensors declared with hostile shapes, data sizes that are right or not."""
    tensors, blobs = [], []
    for name in draw(st.lists(st.sampled_from(["x", "y"]), min_size=1, max_size=2, unique=True)):
        datatype = draw(st.sampled_from(list(Datatype)))
        shape = draw(st.lists(DIM, max_size=4))
        right = math.prod(shape) * datatype.itemsize if all(isinstance(d, int) and d >= 0 for d in shape) else 0
        size = draw(st.sampled_from([right, 0, 1, 2**63, 10**400]) | st.integers(-1, 16))
        tensors.append({"name": name, "datatype": str(datatype), "shape": shape,
                        "parameters": {"binary_data_size": size}})
        blobs.append(b"\x01" * (size if isinstance(size, int) and 0 <= size <= 64 else draw(st.integers(0, 8))))
    header = json.dumps({"inputs": tensors}).encode()
    if draw(st.booleans()):
        header = b'{"nan": NaN,' + header[1:]  # json.loads then reads it, with Python ints of any size
    return header + b"".join(blobs), len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENT)
def test_any_document_decodes_or_raises_v2_error(document: object) -> None:
    """Whatever a client sends, the codec answers a request or a V2Error: never another exception."""
    try:
        request = decode_infer_document(document)
        names, _ = request.output_selection(["x", "y"])
    except V2Error as exc:
        assert exc.kind == "invalid" and exc.message
        return
    assert set(names) <= {"x", "y"}
    for array in request.inputs.values():
        assert isinstance(array, np.ndarray) and array.ndim <= 32 and array.size <= 2**31 - 1


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=binary_request())
def test_any_binary_body_decodes_or_raises_v2_error(request: tuple[bytes, int]) -> None:
    body, header_length = request
    try:
        decoded = decode_infer_request(body, header_length)
    except V2Error as exc:
        assert exc.kind == "invalid" and exc.message
        return
    for array in decoded.inputs.values():
        assert array.nbytes <= len(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENT, nan=st.booleans())
def test_any_json_body_decodes_or_raises_v2_error(document: object, nan: bool) -> None:
    """The same through both JSON readers (a NaN makes orjson hand over to json.loads)."""
    body = json.dumps(document).encode()
    if nan:
        body = b'{"nan": NaN, "doc": ' + body + b"}" if isinstance(document, dict) else b"[NaN, " + body + b"]"
    try:
        decode_infer_request(body, None)
    except V2Error as exc:
        assert exc.kind == "invalid"


def test_parsed_json_decodes_like_the_body() -> None:
    doc = {
        "id": "q",
        "parameters": {"timeout": 2_500_000, "binary_data_output": True},
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
            {"name": "b", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    from_body = decode_infer_request(json.dumps(doc).encode(), None)
    from_doc = decode_infer_document(json.loads(json.dumps(doc)))
    assert from_doc.id == from_body.id == "q"
    assert from_doc.parameters == from_body.parameters
    assert from_doc.timeout_seconds == 2.5
    assert from_doc.outputs == from_body.outputs
    assert from_doc.output_selection(["y", "z"]) == (["y", "z"], {"z"})
    assert list(from_doc.inputs) == list(from_body.inputs) == ["a", "b"]
    for name, array in from_body.inputs.items():
        assert from_doc.inputs[name].dtype == array.dtype and np.array_equal(from_doc.inputs[name], array)


def test_parsed_json_with_binary_data() -> None:
    values = np.array([1.5, -2.0], dtype="<f4")
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    request = decode_infer_document(document, memoryview(values.tobytes()))
    assert np.array_equal(request.inputs["x"], values)
    with pytest.raises(V2Error, match="Inference-Header-Content-Length"):
        decode_infer_document(document)


def test_binary_input_without_header_length_is_explained() -> None:
    body = binary_doc(8, [2]) + b"\x00" * 8
    with pytest.raises(V2Error, match="Inference-Header-Content-Length"):
        decode_infer_request(body, None)


def test_unknown_requested_output() -> None:
    doc = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
        "outputs": [{"name": "nope"}],
    }
    request = decode_infer_request(json.dumps(doc).encode(), None)
    with pytest.raises(V2Error, match="unknown output 'nope'"):
        request.output_selection(["y"])


def test_metadata_and_error_body() -> None:
    signature = Signature.from_dict(
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
        }
    )
    assert model_metadata("iris", ["1", "2"], signature) == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert error_body("boom") == {"error": "boom"}
