"""/api/v1/models/{name}/monitoring, .../monitoring/check, .../monitoring/config and .../feedback.

Endpoints that read recorded predictions first flush this process's recorder, so a caller sees what
it just predicted here (another process's rows follow within PREDICTION_FLUSH_SECONDS).

No ``from __future__ import annotations`` here: ninja reads the parameter annotations at import time.
"""

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from ninja import Query, Schema
from ninja_extra import api_controller, route
from pydantic import ConfigDict, Field

from app.accounts.models import User
from app.api.auth import Controller, bearer_auth
from app.api.openapi import errors
from app.api.schemas import Input
from app.core.errors import Invalid
from app.registry.selectors import model_get, model_list

from . import selectors, services
from .recording import recorder

MAX_FEEDBACK_ITEMS = 10_000


class FeedbackItemIn(Input):
    model_config = ConfigDict(extra="forbid")

    prediction_id: uuid.UUID = Field(strict=False)
    row: int | None = Field(default=None, ge=0, description="Which row of a multi-row prediction (0-based)")
    label: Any = Field(description="The true class label (classification) or value (regression)")


class FeedbackIn(Input):
    """One item (``prediction_id``, ``label``, optional ``row``) or several under ``items``."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: uuid.UUID | None = Field(default=None, strict=False)
    row: int | None = Field(default=None, ge=0)
    label: Any = None
    items: list[FeedbackItemIn] | None = Field(default=None, min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class ConfigOverridesOut(Schema):
    sample_rate: float | None
    drift_threshold: float | None


class MonitoringConfigOut(Schema):
    """The effective settings, and which the model overrides (null: the deployment default)."""

    sample_rate: float
    drift_threshold: float
    overrides: ConfigOverridesOut


class FeedbackOut(Schema):
    recorded: int = Field(description="How many recorded rows were labelled")


class MonitoringConfigIn(Input):
    model_config = ConfigDict(extra="forbid")

    sample_rate: float | None = Field(default=None, ge=0, le=1,
                                      description="Fraction of predictions recorded; null: default")
    drift_threshold: float | None = Field(default=None, gt=0, le=services.MAX_THRESHOLD,
                                          description="PSI past which a feature drifts; null: default")


def _feedback_items(payload: FeedbackIn) -> list[services.Feedback]:
    if payload.items is not None:
        if payload.prediction_id is not None or payload.label is not None or payload.row is not None:
            raise Invalid("send either one item (prediction_id, label, row) or 'items', not both")
        return [services.Feedback(prediction_id=i.prediction_id, row=i.row, label=i.label) for i in payload.items]
    if payload.prediction_id is None or payload.label is None:
        raise Invalid("feedback needs 'prediction_id' and 'label' (or a list of them under 'items')",
                      details=[{"loc": ["body", "label" if payload.prediction_id else "prediction_id"],
                                "field": "label" if payload.prediction_id else "prediction_id", "msg": "required"}])
    return [services.Feedback(prediction_id=payload.prediction_id, row=payload.row, label=payload.label)]


def _summary(user: User, name: str, window: str, version: int | None) -> dict[str, Any]:
    model = model_get(user=user, name=name)
    return selectors.monitoring_summary(model=model, window=selectors.parse_window(window), version=version)


def _check(user: User, name: str, window: str | None, version: int | None) -> dict[str, Any]:
    model = model_get(user=user, name=name)
    span = selectors.parse_window(window) if window is not None else None
    reports, skipped = services.drift_check(model=model, actor=user, window=span, version=version)
    return {"model": model.name, "reports": [selectors.drift_report_out(r, model_name=model.name) for r in reports],
            "skipped": skipped}


def _reports(user: User, name: str, limit: int, version: int | None) -> list[dict[str, Any]]:
    return selectors.drift_report_list(model=model_get(user=user, name=name), limit=limit, version=version)


def _config(user: User, name: str) -> dict[str, Any]:
    return selectors.monitoring_config(model=model_get(user=user, name=name))


def _config_update(user: User, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    return services.monitoring_config_update(model=model_get(user=user, name=name), actor=user, changes=changes)


def _feedback(user: User, name: str, items: list[services.Feedback]) -> dict[str, Any]:
    model = model_get(user=user, name=name)
    return {"recorded": services.feedback_record(model=model, actor=user, items=items)}


@api_controller("/models", tags=["monitoring"], auth=bearer_auth)
class MonitoringController(Controller):
    @route.get("/{name}/monitoring", response=dict,
               summary="Drift, predictions, live accuracy, request rate, latency and errors over a window")
    async def summary(self, name: str, window: str = "1h", version: int | None = None) -> dict[str, Any]:
        await recorder.flush()
        return await sync_to_async(_summary)(self.caller, name, window, version)

    @route.post("/{name}/monitoring/check", response={200: dict, **errors(403)},
                summary="Check drift now (owner or admin); stores a report per version, publishes drift events")
    async def check(self, name: str, window: str | None = None, version: int | None = None) -> dict[str, Any]:
        await recorder.flush()
        return await sync_to_async(_check)(self.caller, name, window, version)

    @route.get("/{name}/monitoring/reports", response=list[dict[str, Any]],
               summary="Stored drift checks, oldest first, with PSI per feature (drift over time)")
    async def reports(self, name: str, limit: int = Query(100, ge=1, le=1000),
                      version: int | None = None) -> list[dict[str, Any]]:
        return await sync_to_async(_reports)(self.caller, name, limit, version)

    @route.get("/{name}/monitoring/config", response=MonitoringConfigOut,
               summary="Sample rate and drift threshold of a model")
    async def get_config(self, name: str) -> dict[str, Any]:
        return await sync_to_async(_config)(self.caller, name)

    @route.patch("/{name}/monitoring/config", response={200: MonitoringConfigOut, **errors(403)},
                 summary="Set (or with null reset to the default) the sample rate and drift threshold")
    async def patch_config(self, name: str, payload: MonitoringConfigIn) -> dict[str, Any]:
        changes = payload.model_dump(exclude_unset=True)
        return await sync_to_async(_config_update)(self.caller, name, changes)

    @route.post("/{name}/feedback", response={200: FeedbackOut, **errors(403)},
                summary="Ground truth for recorded predictions (all or nothing)")
    async def feedback(self, name: str, payload: FeedbackIn) -> dict[str, Any]:
        items = _feedback_items(payload)
        await recorder.flush()
        return await sync_to_async(_feedback)(self.caller, name, items)


def _traffic(user: User) -> list[dict[str, Any]]:
    return selectors.traffic_by_model(models=list(model_list(user=user)))


def _alerts(user: User, limit: int) -> list[dict[str, Any]]:
    return selectors.drift_alert_list(models=list(model_list(user=user)), limit=limit)


@api_controller("/monitoring", tags=["monitoring"], auth=bearer_auth)
class MonitoringOverviewController(Controller):
    """Figures across every model the caller can see (the console's overview)."""

    @route.get("/traffic", response=list[dict[str, Any]],
               summary="Requests per second of each visible model over the last minute or two")
    async def traffic(self) -> list[dict[str, Any]]:
        return await sync_to_async(_traffic)(self.caller)

    @route.get("/alerts", response=list[dict[str, Any]],
               summary="The newest drift reports past their threshold on visible models (also live on user:<owner>)")
    async def alerts(self, limit: int = Query(20, ge=1, le=200)) -> list[dict[str, Any]]:
        return await sync_to_async(_alerts)(self.caller, limit)
