"""The two HTTP inference calls, once: REST predict and V2 infer.

Both the Django views (`api.PredictController`, `v2_views.model_infer`) and the ASGI fast path
(`fastpath`) call these, so the two routes to a model cannot drift apart. Callers authenticate
first and map the exceptions (`ApiError`, `inference.errors.InferenceError`) to their protocol.
"""

from __future__ import annotations

import time
from typing import Any

from app.accounts.models import User
from app.core.errors import Invalid
from app.monitoring import recording
from inference import v2
from inference.batcher import Priority
from inference.errors import V2Error

from . import records, runtime
from .arrays import inputs_from_json, outputs_to_json


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
                  started: float | None = None, priority: Priority = Priority.NORMAL) -> dict[str, Any]:
    """``POST /api/v1/models/{name}/predict``: the answer body for JSON ``inputs`` (tensors or records)."""
    started = time.perf_counter() if started is None else started
    target = await runtime.resolve(user, name, version)
    with recording.observe(target, protocol="rest", started=started) as seen:
        deadline = runtime.deadline_for(target, timeout_ms)
        if records.is_records(inputs):
            arrays = records.records_to_inputs(target, inputs)
            served, outputs = await runtime.infer(target, arrays, deadline=deadline, protocol="rest",
                                                  priority=priority)
            answer: Any = records.outputs_to_records(target, outputs)
            seen.records(served, inputs, answer)
        else:
            arrays, shorthand = inputs_from_json(target.signature, inputs)
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


def v2_version(raw: str | None) -> int | None:
    """The ``{version}`` of a V2 path."""
    if raw is None:
        return None
    if not raw.isdigit():
        raise V2Error(f"model version must be a positive integer, got {raw!r}")
    return int(raw)


def v2_header_length(raw: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header of the binary extension."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise V2Error(f"{v2.HEADER_LENGTH_HEADER} must be an integer") from None


async def v2_infer(user: User, name: str, version: int | None, body: bytes,
                   header_length: int | None) -> tuple[bytes, int | None]:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: the response body and, when it carries binary
    outputs, the length of its JSON part (for the ``Inference-Header-Content-Length`` header)."""
    started = time.perf_counter()
    target = await runtime.resolve(user, name, version)
    with recording.observe(target, protocol="v2", started=started) as seen:
        decoded = v2.decode_infer_request(body, header_length)
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
