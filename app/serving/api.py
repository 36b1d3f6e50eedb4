import time
from typing import Any

from django.http import HttpRequest
from ninja import Schema
from ninja_extra import api_controller, route
from pydantic import Field

from app.api.auth import Controller, bearer_auth
from app.core.errors import Invalid
from app.monitoring import recording

from . import records, runtime
from .arrays import inputs_from_json, outputs_to_json


class PredictIn(Schema):
    inputs: Any = Field(description="A nested list (single-input models) or an object of input name -> nested list")


class PredictOut(Schema):
    model: str
    version: int
    prediction_id: str = Field(description="Names this prediction for feedback; row i of a batch is (prediction_id, i)")
    outputs: Any
    timing: dict[str, float]


def timeout_header(request: HttpRequest) -> float | None:
    raw = request.headers.get("X-Request-Timeout-Ms")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Invalid("X-Request-Timeout-Ms must be a number of milliseconds") from None
    if not 0 < value <= 600_000:
        raise Invalid("X-Request-Timeout-Ms must be in (0, 600000]")
    return value


@api_controller("/models", tags=["inference"], auth=bearer_auth)
class PredictController(Controller):
    @route.post("/{name}/predict", response=PredictOut, summary="Run a model on JSON inputs (batched)")
    async def predict(self, name: str, payload: PredictIn, version: int | None = None) -> dict[str, Any]:
        request = self.http_request
        started = time.perf_counter()
        target = await runtime.resolve(self.caller, name, version)
        with recording.observe(target, protocol="rest", started=started) as seen:
            deadline = runtime.deadline_for(target, timeout_header(request))
            if records.is_records(payload.inputs):
                inputs = records.records_to_inputs(target, payload.inputs)
                served_version, outputs = await runtime.infer(target, inputs, deadline=deadline, protocol="rest")
                answer: Any = records.outputs_to_records(target, outputs)
                seen.records(served_version, payload.inputs, answer)
            else:
                inputs, shorthand = inputs_from_json(target.signature, payload.inputs)
                served_version, outputs = await runtime.infer(target, inputs, deadline=deadline, protocol="rest")
                answer = outputs_to_json(outputs, shorthand)
                seen.tensors(served_version, inputs, outputs)
        return {
            "model": name,
            "version": served_version,
            "prediction_id": seen.prediction_id,
            "outputs": answer,
            "timing": {"total_ms": round((time.perf_counter() - started) * 1000, 3)},
        }
