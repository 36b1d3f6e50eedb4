import asyncio
import json
import os
import tempfile
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from ninja import File, Form, Query
from ninja.files import UploadedFile
from ninja_extra import api_controller, route

from app.accounts.models import User
from app.api.auth import BeforeBody, Controller, bearer_auth
from app.api.openapi import errors, json_query
from app.core.errors import Invalid, NotFound, PayloadTooLarge
from inference import architectures, formats
from inference.errors import ArchitectureError

from . import selectors, services
from .models import MlModel, ModelVersion, Stage, StageChange
from .schemas import (
    ArchitecturesOut,
    ModelCreateIn,
    ModelOut,
    ModelPatchIn,
    PromoteIn,
    RollbackIn,
    RollbackOut,
    StageChangeOut,
    StateDictIn,
    StateDictOut,
    VersionOut,
)


def model_out(model: MlModel) -> dict[str, Any]:
    versions = list(model.versions.values_list("number", "stage"))
    production = next((n for n, s in versions if s == Stage.PRODUCTION), None)
    return {
        "name": model.name,
        "description": model.description,
        "owner": model.owner.username,
        "visibility": model.visibility,
        "sharing": selectors.model_shared_usernames(model=model),
        "serving": {
            "max_batch_size": model.max_batch_size,
            "max_delay_ms": model.max_delay_ms,
            "max_queue": model.max_queue,
            "timeout_ms": model.timeout_ms,
            "device": model.device,
            "dispatch_policy": model.dispatch_policy or "default",
            "target_p99_ms": model.target_p99_ms,
        },
        "production_version": production,
        "latest_version": max((n for n, _ in versions), default=None),
        "created_at": model.created_at,
        "updated_at": model.updated_at,
    }


def version_out(version: ModelVersion) -> dict[str, Any]:
    return {
        "model": version.model.name,
        "version": version.number,
        "format": version.format,
        "architecture": version.architecture,
        "config": version.config,
        "signature": version.signature,
        "stage": version.stage,
        "artifact_sha256": version.artifact_sha256,
        "artifact_size": version.artifact_size,
        "metrics": version.metrics,
        "created_by": version.created_by.username if version.created_by else None,
        "source_job_id": version.source_job_id,
        "created_at": version.created_at,
        "promoted_at": version.promoted_at,
    }


def _model_get_out(user: User, name: str) -> dict[str, Any]:
    return model_out(selectors.model_get(user=user, name=name))


def _model_list_out(user: User) -> list[dict[str, Any]]:
    return [model_out(m) for m in selectors.model_list(user=user)]


def _model_create_out(user: User, payload: ModelCreateIn) -> dict[str, Any]:
    model = services.model_create(
        owner=user, name=payload.name, description=payload.description, visibility=payload.visibility
    )
    return model_out(model)


def _model_patch_out(user: User, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    model = selectors.model_get(user=user, name=name)
    return model_out(services.model_update(model=model, actor=user, changes=changes))


def _versions_out(user: User, name: str) -> list[dict[str, Any]]:
    model = selectors.model_get(user=user, name=name)
    return [version_out(v) for v in selectors.model_version_list(model=model).select_related("model", "created_by")]


def _version_out(user: User, name: str, number: int) -> dict[str, Any]:
    model = selectors.model_get(user=user, name=name)
    return version_out(selectors.model_version_get(model=model, number=number))


def _promote_out(user: User, name: str, number: int, stage: str, reason: str) -> dict[str, Any]:
    model = selectors.model_get(user=user, name=name)
    version = selectors.model_version_get(model=model, number=number)
    promoted = services.model_version_promote(version=version, stage=stage, actor=user, reason=reason)
    return version_out(ModelVersion.objects.select_related("model", "created_by").get(pk=promoted.pk))


async def _may_publish(user: User, path: dict[str, Any]) -> None:
    def check() -> None:
        model = selectors.model_get(user=user, name=path.get("name", ""))
        services.model_check_manage(actor=user, model=model)

    await sync_to_async(check)()
def stage_change_out(change: StageChange) -> dict[str, Any]:
    return {
        "id": change.pk,
        "version": change.version.number,
        "from_stage": change.from_stage,
        "to_stage": change.to_stage,
        "action": change.action,
        "actor": change.actor.username if change.actor else None,
        "reason": change.reason,
        "at": change.at,
    }


def _history_out(user: User, name: str, limit: int) -> list[dict[str, Any]]:
    model = selectors.model_get(user=user, name=name)
    return [stage_change_out(c) for c in selectors.model_history(model=model, limit=limit)]


def _rollback_out(user: User, name: str, reason: str) -> dict[str, Any]:
    model = selectors.model_get(user=user, name=name)
    restored, previous = services.model_rollback(model=model, actor=user, reason=reason)
    changes = selectors.model_history(model=model, limit=2 if previous else 1)
    return {
        "model": model.name,
        "version": restored.number,
        "from_version": previous.number if previous else None,
        "changes": [stage_change_out(c) for c in reversed(list(changes))],
    }


@api_controller("/models", tags=["models"], auth=bearer_auth)
class ModelController(Controller):
    @route.get("", response=list[ModelOut], summary="Models the caller can see")
    async def list_models(self) -> list[dict[str, Any]]:
        return await sync_to_async(_model_list_out)(self.caller)

    @route.post("", response={201: ModelOut, **errors(403, 409)}, summary="Create a model (maintainer+)")
    async def create_model(self, payload: ModelCreateIn) -> tuple[int, dict[str, Any]]:
        return 201, await sync_to_async(_model_create_out)(self.caller, payload)

    @route.get("/{name}", response=ModelOut, summary="One model")
    async def get_model(self, name: str) -> dict[str, Any]:
        return await sync_to_async(_model_get_out)(self.caller, name)

    @route.patch("/{name}", response={200: ModelOut, **errors(403)},
                 summary="Serving config, description, visibility, sharing")
    async def patch_model(self, name: str, payload: ModelPatchIn) -> dict[str, Any]:
        changes = payload.model_dump(exclude_unset=True)
        return await sync_to_async(_model_patch_out)(self.caller, name, changes)

    @route.get("/{name}/versions", response=list[VersionOut], summary="Versions of a model")
    async def list_versions(self, name: str) -> list[dict[str, Any]]:
        return await sync_to_async(_versions_out)(self.caller, name)

    @route.get("/{name}/versions/{version}", response=VersionOut, summary="One version")
    async def get_version(self, name: str, version: int) -> dict[str, Any]:
        return await sync_to_async(_version_out)(self.caller, name, version)

    @route.post("/{name}/versions/{version}/promote", response={200: VersionOut, **errors(403)},
                summary="Move a version to a stage")
    async def promote(self, name: str, version: int, payload: PromoteIn) -> dict[str, Any]:
        user = self.caller
        return await sync_to_async(_promote_out)(user, name, version, payload.stage, payload.reason)

    @route.get("/{name}/history", response=list[StageChangeOut], summary="Promotion history, newest first")
    async def history(self, name: str, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return await sync_to_async(_history_out)(self.caller, name, limit)

    @route.post("/{name}/rollback", response={200: RollbackOut, **errors(403, 409)},
                summary="Move production back to the previous production version (409 when there is none)")
    async def rollback(self, name: str, payload: RollbackIn) -> dict[str, Any]:
        return await sync_to_async(_rollback_out)(self.caller, name, payload.reason)

    @route.post("/{name}/versions", response={201: VersionOut, **errors(403, 507)},
                summary="Publish version N+1 (multipart)", permissions=[BeforeBody(_may_publish)])
    async def publish(
        self, name: str, artifact: File[UploadedFile], manifest: Form[str]
    ) -> tuple[int, dict[str, Any]]:
        user = self.caller
        if artifact.size is not None and artifact.size > settings.MAX_ARTIFACT_BYTES:
            raise PayloadTooLarge(f"artifact exceeds the limit of {settings.MAX_ARTIFACT_BYTES} bytes")
        model = await sync_to_async(selectors.model_get)(user=user, name=name)
        parsed = await sync_to_async(services.manifest_parse)(manifest)
        path, cleanup = _local_path(artifact)
        try:
            version = await services.model_version_publish(
                model=model, actor=user, artifact_path=path, manifest=parsed
            )
        finally:
            cleanup()
        full = await ModelVersion.objects.select_related("model", "created_by").aget(pk=version.pk)
        return 201, version_out(full)


def _local_path(upload: UploadedFile) -> tuple[str, Any]:
    """A filesystem path for the upload: Django's temp file when it spooled to disk, else a copy."""
    if hasattr(upload, "temporary_file_path"):
        return upload.temporary_file_path(), lambda: None
    fd, path = tempfile.mkstemp(prefix="tw-artifact-")
    with os.fdopen(fd, "wb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    return path, lambda: os.unlink(path)


@api_controller("/architectures", tags=["models"], auth=bearer_auth)
class ArchitectureController(Controller):
    @route.get("", response=ArchitecturesOut, summary="Registered architectures and their config schema")
    async def list_architectures(self) -> dict[str, Any]:
        listed = sorted(architectures.available().items())
        return {"architectures": [{"name": n, "config_schema": s} for n, s in listed]}

    @route.get("/{name}/state-dict", response=StateDictOut,
               summary="The tensors a valid safetensors artifact must hold (config as JSON in ?config=)",
               openapi_extra=json_query(config={"type": "object", "default": {}}))
    async def state_dict(self, name: str, config: str = "{}") -> dict[str, Any]:
        return await asyncio.to_thread(_state_dict_out, name, _config_param(config))

    @route.post("/{name}/state-dict", response=StateDictOut,
                summary="The tensors a valid safetensors artifact must hold (config in the body)")
    async def state_dict_post(self, name: str, payload: StateDictIn) -> dict[str, Any]:
        return await asyncio.to_thread(_state_dict_out, name, payload.config)


def _config_param(raw: str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except ValueError:
        raise Invalid("config must be a JSON object", details=[{"loc": ["query", "config"], "field": "config",
                                                                 "msg": "not valid JSON"}]) from None
    if not isinstance(config, dict):
        raise Invalid("config must be a JSON object", details=[{"loc": ["query", "config"], "field": "config",
                                                                 "msg": "must be an object"}])
    return config


def _state_dict_out(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Runs on a worker thread: building the module on the meta device is CPU work."""
    if name not in architectures.available():
        raise NotFound(f"no architecture named {name!r}")
    try:
        normalised = architectures.validate_config(name, config)
        tensors = formats.expected_tensors(name, normalised)
        signature = architectures.default_signature(name, normalised)
    except ArchitectureError as exc:
        raise Invalid(exc.message, details=[{"loc": ["config"], "field": "config", "msg": exc.message}]) from exc
    return {
        "architecture": name,
        "config": normalised,
        "tensors": [{"name": key, "dtype": t.dtype, "shape": list(t.shape)} for key, t in tensors.items()],
        "signature": signature.to_dict() if signature is not None else None,
    }
