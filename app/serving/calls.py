"""The two HTTP inference calls, once: REST predict and V2 infer.

Both the Django views (`api.PredictController`, `v2_views.model_infer`) and the ASGI fast path
(`fastpath`) call these, so the two routes to a model cannot drift apart. Callers authenticate
first and map the exceptions (`ApiError`, `inference.errors.InferenceError`) to their protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, WithJsonSchema

from app.accounts.models import User
from app.core.errors import Invalid
from app.monitoring import recording
from inference import v2
from inference.batcher import Priority
from inference.errors import RequestTooLarge, V2Error

from . import records, runtime
from .arrays import inputs_from_json, outputs_to_json

MAX_VERSION = 2_147_483_647  # what a PositiveIntegerField holds on every database Django supports
MAX_VERSION_DIGITS = len(str(MAX_VERSION))
VERSION_RULE = f"model version must be an integer from 1 to {MAX_VERSION}"


def version_number(raw: object) -> int:
    """A model version as a client writes it, in a path segment, a query value or a JSON message: a
    JSON integer or a string of ASCII digits, from 1 to `MAX_VERSION`; ``ValueError`` otherwise.

    The one parser of versions on the serving routes. ``str.isdigit`` and ``int`` alone are not enough:
    ``"²"`` is a digit to the first and not to the second, ``"\\u0661"`` (Arabic-Indic one) is version 1
    to both, and ``int`` of 5,000 digits raises (and costs quadratic time before that limit)."""
    if type(raw) is int:
        value = raw
    elif isinstance(raw, str) and 0 < len(raw) <= MAX_VERSION_DIGITS and raw.isascii() and raw.isdigit():
        value = int(raw)
    else:
        raise ValueError(VERSION_RULE)
    if not 1 <= value <= MAX_VERSION:
        raise ValueError(VERSION_RULE)
    return value


# ``?version=`` of REST predict, in the Django view (django-ninja validates it with this type) and on the
# fast path (which runs the same validation), so both answer the same 422.
VersionQuery = Annotated[int, BeforeValidator(version_number),
                         WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_VERSION})]


# A request body larger than this is parsed and converted on a worker thread, a smaller one on the event
# loop. Parsing and converting a tensor costs about 20 µs per KB, turning records into features about
# 100 µs per KB, and the hop about 50 µs (bench/OFFLOAD.md): so about 1 ms of loop time at most, and a
# one-row request (3 KB for 256 features) pays no hop.
OFFLOAD_BYTES = 64 * 1024
RECORDS_OFFLOAD_BYTES = 8 * 1024

T = TypeVar("T")


def timeout_ms_from_header(raw: str | None) -> float | None:
    """The ``X-Request-Timeout-Ms`` header of a REST call, checked."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Invalid("X-Request-Timeout-Ms must be a number of milliseconds") from None
    if not 0 < value <= 600_000:
        raise Invalid("X-Request-Timeout-Ms must be in (0, 600000]")
    return value


def priority_from_header(raw: str | None) -> Priority:
    """The ``X-Priority`` header of a REST call (``high``, ``normal`` or ``low``), checked."""
    if raw is None:
        return Priority.NORMAL
    try:
        return Priority.parse(raw)
    except ValueError:
        raise Invalid("X-Priority must be one of high, normal, low") from None


async def predict(user: User, name: str, version: int | None, inputs: Any, *, timeout_ms: float | None,
                  size: int = 0, started: float | None = None,
                  priority: Priority = Priority.NORMAL) -> dict[str, Any]:
    """``POST /api/v1/models/{name}/predict``: the answer body for JSON ``inputs`` (tensors or records)
    from a body of ``size`` bytes.

    The row limit is checked before anything is converted, and a large request (`OFFLOAD_BYTES`,
    `RECORDS_OFFLOAD_BYTES`) is converted on a worker thread: turning 7 MB of records into features took
    half a second, and on the event loop that stalled every other request of the process."""
    started = time.perf_counter() if started is None else started
    target = await runtime.resolve(user, name, version)
    with recording.observe(target, protocol="rest", started=started) as seen:
        deadline = runtime.deadline_for(target, timeout_ms)
        _check_rows(target, inputs)
        if records.is_records(inputs):
            off_loop = size > RECORDS_OFFLOAD_BYTES
            arrays = await _run(off_loop, records.records_to_inputs, target, inputs)
            served, outputs = await runtime.infer(target, arrays, deadline=deadline, protocol="rest",
                                                  priority=priority)
            answer: Any = await _run(off_loop, records.outputs_to_records, target, outputs)
            seen.records(served, inputs, answer)
        else:
            arrays, shorthand = await _run(size > OFFLOAD_BYTES, inputs_from_json, target.signature, inputs)
            served, outputs = await runtime.infer(target, arrays, deadline=deadline, protocol="rest",
                                                  priority=priority)
            answer = outputs_to_json(outputs, shorthand)
            seen.tensors(served, arrays, outputs)
    return {
        "model": name,
        "version": served,
        "prediction_id": seen.prediction_id,
        "outputs": answer,
        "timing": {"total_ms": round((time.perf_counter() - started) * 1000, 3)},
    }


def _check_rows(target: runtime.Target, inputs: Any) -> None:
    """The batcher's limit on rows per request, from the JSON before it is converted: a list is one row
    per item; an object of name -> list, its longest list."""
    if isinstance(inputs, list):
        rows = len(inputs)
    elif isinstance(inputs, dict):
        rows = max((len(v) for v in inputs.values() if isinstance(v, list)), default=0)
    else:
        return
    limit = target.model.max_queue
    if rows > limit:
        raise RequestTooLarge(f"request has {rows} rows; this model queues at most {limit}",
                              details={"rows": rows, "max_rows": limit})


async def _run(off_loop: bool, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args) if off_loop else fn(*args)


def v2_version(raw: str | None) -> int | None:
    """The ``{version}`` of a V2 path (400 when it is not one)."""
    if raw is None:
        return None
    try:
        return version_number(raw)
    except ValueError as exc:
        shown = raw if len(raw) <= 32 else f"{raw[:32]}..."
        raise V2Error(f"{exc}, got {shown!r}") from None


def v2_header_length(raw: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header of the binary extension."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise V2Error(f"{v2.HEADER_LENGTH_HEADER} must be an integer")
    return int(raw)


async def v2_infer(user: User, name: str, version: int | None, body: bytes,
                   header_length: int | None) -> tuple[bytes, int | None]:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: the response body and, when it carries binary
    outputs, the length of its JSON part (for the ``Inference-Header-Content-Length`` header)."""
    started = time.perf_counter()
    target = await runtime.resolve(user, name, version)
    with recording.observe(target, protocol="v2", started=started) as seen:
        decoded = await _run(len(body) > OFFLOAD_BYTES, v2.decode_infer_request, body, header_length)
        names, binary = decoded.output_selection(target.signature.output_names)
        timeout = decoded.timeout_seconds
        deadline = runtime.deadline_for(target, None if timeout is None else timeout * 1000)
        inputs = dict(decoded.inputs)
        served, outputs = await runtime.infer(target, inputs, deadline=deadline, protocol="v2",
                                              priority=decoded.priority)
        seen.tensors(served, inputs, outputs)
    selected = {n: outputs[n] for n in names}
    payload, json_length = v2.encode_infer_response(name, str(served), decoded.id, selected, binary)
    return recording.with_prediction_id(payload, json_length, seen.prediction_id)
