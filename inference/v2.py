"""Open Inference Protocol (KServe V2) codec, with Triton's binary tensor data extension.

Public API::

    request = decode_infer_request(body, header_length)   # header_length: Inference-Header-Content-Length
    request = decode_infer_document(json.loads(text))     # the same, from JSON already parsed
    names, binary = request.output_selection(signature.output_names)
    body, header_length = encode_infer_response(model_name, model_version, request.id, outputs, binary)
    model_metadata(name, versions, signature) -> dict      # GET /v2/models/{name}[/versions/{v}]
    error_body(message) -> dict                            # {"error": message}

Request JSON (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):
``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "parameters"?, "data"?}], "outputs"?}``.
``data`` may be flat (row-major) or nested. With the binary extension an input carries
``parameters.binary_data_size`` instead of ``data``; the JSON is the first ``header_length``
bytes of the body and the inputs' raw little-endian bytes follow in input order. Every byte after
the JSON must belong to exactly one input, or the request is refused.

Request parameters understood: ``binary_data_output`` (bool: all outputs binary unless an output
says otherwise) and ``timeout`` in **microseconds**, as Triton and ``tritonclient`` define it
(`InferRequest.timeout_seconds`), and Torchwire's ``priority`` (``high``, ``normal`` or ``low``;
`InferRequest.priority`, see docs/batching.md). Per output: ``parameters.binary_data`` (bool). Shared memory,
``classification`` outputs, BYTES and BF16 tensors are refused with `V2Error`.

Responses list outputs with a flat row-major ``data`` array, or ``parameters.binary_data_size`` and
the raw bytes appended after the JSON in output order (then `encode_infer_response` returns the
JSON length for the ``Inference-Header-Content-Length`` response header). Non-finite floats in
JSON outputs are written as ``NaN``/``Infinity``, which Python's and Triton's parsers accept but
strict JSON does not; ask for binary outputs when a model can produce them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference import jsonio
from inference.batcher import Priority
from inference.datatypes import Datatype, array_from_json, checked_shape, datatype_of, parse_datatype
from inference.errors import DatatypeError, InputError, V2Error
from inference.signature import Signature

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "V2Error",
    "decode_infer_document",
    "decode_infer_request",
    "encode_infer_response",
    "error_body",
    "model_metadata",
]

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
_UNSUPPORTED_TENSOR_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # parameters.binary_data; None defers to the request's binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]  # in request order; binary inputs may be read-only views of the body
    outputs: tuple[RequestedOutput, ...]  # empty: every output of the model
    binary_data_output: bool

    @property
    def priority(self) -> Priority:
        """The ``priority`` request parameter (``high``, ``normal``, ``low``; Torchwire's own), else normal."""
        value = self.parameters.get("priority")
        return Priority.NORMAL if value is None else Priority.parse(value)

    @property
    def timeout_seconds(self) -> float | None:
        """The ``timeout`` request parameter (microseconds on the wire), in seconds."""
        value = self.parameters.get("timeout")
        return None if value is None else value / 1_000_000

    def output_selection(self, available: Sequence[str]) -> tuple[list[str], set[str]]:
        """Outputs to return (requested order, else `available` order) and which of them go binary."""
        if not self.outputs:
            return list(available), set(available) if self.binary_data_output else set()
        unknown = [o.name for o in self.outputs if o.name not in available]
        if unknown:
            raise V2Error(
                f"unknown output {unknown[0]!r}; the model produces {', '.join(map(repr, available))}",
                details={"output": unknown[0]},
            )
        binary = {o.name for o in self.outputs if (self.binary_data_output if o.binary is None else o.binary)}
        return [o.name for o in self.outputs], binary


def message_priority(value: object) -> Priority:
    """A ``priority`` given beside a V2 request (the websocket message's own field), checked like the
    ``priority`` parameter."""
    try:
        return Priority.parse(value)
    except ValueError:
        raise V2Error("'priority' must be one of high, normal, low") from None


def decode_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a V2 inference request body; every malformation raises `V2Error`."""
    if header_length is None:
        header, binary = body, None
    else:
        if not 0 < header_length <= len(body):
            raise V2Error(
                f"{HEADER_LENGTH_HEADER} is {header_length} but the body has {len(body)} bytes",
                details={"header_length": header_length, "body_length": len(body)},
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        document = jsonio.loads(header)
    except jsonio.JsonLimitExceeded as exc:
        raise V2Error(f"request JSON is refused: {exc}") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        hint = "" if header_length is not None else f" (binary data needs the {HEADER_LENGTH_HEADER} header)"
        raise V2Error(f"request JSON is malformed: {exc}{hint}") from exc
    return decode_infer_document(document, binary)


def decode_infer_document(document: object, binary: memoryview | None = None) -> InferRequest:
    """`decode_infer_request` for JSON already parsed (``document`` as `json.loads` returns it), for
    callers that parsed the message themselves. ``binary`` is what followed the JSON when the request
    came with a header length; None means no binary data extension, so an input that claims binary
    data is refused. Every malformation raises `V2Error`."""
    if not isinstance(document, dict):
        raise V2Error("request must be a JSON object")
    has_binary = binary is not None
    if binary is None:
        binary = memoryview(b"")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("'id' must be a string")
    parameters = _object(document.get("parameters"), "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise V2Error("parameters.binary_data_output must be a boolean")
    _check_timeout(parameters.get("timeout"))
    priority = parameters.get("priority")
    if priority is not None:
        try:
            Priority.parse(priority)
        except ValueError:
            raise V2Error("parameters.priority must be one of high, normal, low") from None

    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, position, binary, offset, has_binary)
        if name in inputs:
            raise V2Error(f"input {name!r} appears twice", details={"input": name})
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise V2Error(
            f"{len(binary) - offset} bytes of binary data follow the JSON but no input claims them",
            details={"binary_bytes": len(binary), "claimed_bytes": offset},
        )
    return InferRequest(
        id=request_id,
        parameters=parameters,
        inputs=inputs,
        outputs=_decode_outputs(document.get("outputs")),
        binary_data_output=binary_output,
    )


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    id: str | None,
    outputs: Mapping[str, np.ndarray],
    binary: set[str] | bool = False,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON length for the
    ``Inference-Header-Content-Length`` header (None means the body is all JSON)."""
    entries = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        try:
            datatype = datatype_of(array.dtype)
        except DatatypeError as exc:
            raise V2Error(f"output {name!r}: {exc.message}") from exc
        entry: dict[str, Any] = {"name": name, "datatype": str(datatype), "shape": list(array.shape)}
        if binary is True or (binary is not False and name in binary):
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if id is not None:
        document["id"] = id
    document["outputs"] = entries
    header = jsonio.dumps(document)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def model_metadata(
    name: str, versions: Sequence[str], signature: Signature, platform: str = "pytorch"
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [s.to_dict() for s in signature.inputs],
        "outputs": [s.to_dict() for s in signature.outputs],
    }


def error_body(message: str) -> dict[str, str]:
    """The V2 error response object."""
    return {"error": message}


def _decode_input(
    raw: object, position: int, binary: memoryview, offset: int, has_binary: bool
) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise V2Error(f"inputs[{position}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(f"inputs[{position}].name must be a non-empty string")
    try:
        datatype = parse_datatype(raw.get("datatype"))
    except DatatypeError as exc:
        raise V2Error(f"input {name!r}: {exc.message}", details={"input": name}) from exc
    try:
        shape = checked_shape(raw.get("shape"), name=name)
    except InputError as exc:
        raise V2Error(exc.message, details={"input": name}) from None
    parameters = _object(raw.get("parameters"), f"input {name!r} parameters")
    for key in _UNSUPPORTED_TENSOR_PARAMETERS:
        if key in parameters:
            raise V2Error(f"input {name!r}: shared memory is not supported", details={"input": name})

    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise V2Error(f"input {name!r} has neither 'data' nor parameters.binary_data_size", details={"input": name})
        try:
            return name, array_from_json(raw["data"], datatype, name=name, shape=shape), 0
        except InputError as exc:
            raise V2Error(exc.message, details={"input": name}) from exc
    if "data" in raw:
        raise V2Error(f"input {name!r} has both 'data' and binary_data_size", details={"input": name})
    if not has_binary:
        raise V2Error(
            f"input {name!r} uses binary_data_size but the request has no {HEADER_LENGTH_HEADER} header",
            details={"input": name},
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise V2Error(f"input {name!r}: binary_data_size must be a non-negative integer", details={"input": name})
    if size >= 2**63:  # not formatted: str() of an int thousands of digits long raises
        raise V2Error(f"input {name!r}: binary_data_size is out of range", details={"input": name})
    expected = math.prod(shape) * datatype.itemsize
    if size != expected:
        raise V2Error(
            f"input {name!r}: binary_data_size is {size} but {datatype} {shape} takes {expected} bytes",
            details={"input": name},
        )
    if offset + size > len(binary):
        raise V2Error(
            f"input {name!r}: binary data ends after {len(binary) - offset} of its {size} bytes",
            details={"input": name},
        )
    chunk = binary[offset : offset + size]
    if datatype is Datatype.BOOL:
        if size and np.frombuffer(chunk, dtype=np.uint8).max() > 1:
            raise V2Error(f"input {name!r}: BOOL bytes must be 0 or 1", details={"input": name})
    array = np.frombuffer(chunk, dtype=datatype.numpy_dtype.newbyteorder("<")).reshape(shape)
    return name, array, size


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, bool) and isinstance(timeout, int | float):
        try:
            if math.isfinite(timeout) and timeout >= 0:  # an int past a float's range overflows here
                return
        except OverflowError:
            pass
    raise V2Error("parameters.timeout must be a non-negative number of microseconds")


def _decode_outputs(raw: object) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise V2Error("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise V2Error(f"outputs[{position}] must be an object with a string 'name'")
        name = item["name"]
        parameters = _object(item.get("parameters"), f"output {name!r} parameters")
        if "classification" in parameters:
            raise V2Error(f"output {name!r}: classification outputs are not supported", details={"output": name})
        if any(key in parameters for key in _UNSUPPORTED_TENSOR_PARAMETERS):
            raise V2Error(f"output {name!r}: shared memory is not supported", details={"output": name})
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise V2Error(f"output {name!r}: binary_data must be a boolean", details={"output": name})
        if any(o.name == name for o in outputs):
            raise V2Error(f"output {name!r} is requested twice", details={"output": name})
        outputs.append(RequestedOutput(name=name, binary=binary, parameters=parameters))
    return tuple(outputs)


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"{what} must be an object")
    return value
