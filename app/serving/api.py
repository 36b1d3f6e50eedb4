from typing import Any

from ninja import Schema
from ninja_extra import api_controller, route
from pydantic import Field

from app.api.auth import Controller, bearer_auth
from app.api.openapi import errors
from app.api.schemas import Input

from . import calls


class PredictIn(Input):
    inputs: Any = Field(description="A nested list (single-input models) or an object of input name -> nested list")


class PredictOut(Schema):
    model: str
    version: int
    prediction_id: str = Field(description="Names this prediction for feedback; row i of a batch is (prediction_id, i)")
    outputs: Any
    timing: dict[str, float]


@api_controller("/models", tags=["inference"], auth=bearer_auth)
class PredictController(Controller):
    """Documents the route and serves it when the fast path (`app.serving.fastpath`) is switched off."""

    @route.post("/{name}/predict", response={200: PredictOut, **errors(403, 429, 503, 504)},
                summary="Run a model on JSON inputs (batched)")
    async def predict(self, name: str, payload: PredictIn, version: calls.VersionQuery | None = None) -> dict[str, Any]:
        timeout_ms = calls.timeout_ms_from_header(self.http_request.headers.get("X-Request-Timeout-Ms"))
        return await calls.predict(self.caller, name, version, payload.inputs, timeout_ms=timeout_ms,
                                   size=len(self.http_request.body))
