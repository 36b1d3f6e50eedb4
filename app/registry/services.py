"""Writes for the registry. Sync and transactional; async callers wrap each in one ``sync_to_async``.

Side effects (serving pool hot swap, realtime events) run from ``transaction.on_commit``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from app.accounts.models import Role, User
from app.core import invalidation
from app.core.errors import Conflict, Forbidden, Invalid
from app.core.storage import get_storage
from app.events.services import publish_on_commit
from inference import architectures, formats, jsonio
from inference.errors import ArchitectureError, ArtifactError, ArtifactForbidden, SignatureError
from inference.runner import dry_run
from inference.signature import Signature

from .models import MlModel, ModelVersion, Stage, StageChange, Visibility

# Validators match the whole string (`fullmatch`): with `match` and `$`, "x\n" passes, since `$` also
# matches before a trailing newline.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEVICE_RE = re.compile(r"auto|cpu|cuda(?::[0-9]{1,2})?")
NAME_RULE = "1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"

SERVING_LIMITS: dict[str, tuple[float, float]] = {
    "max_batch_size": (1, 4096),
    "max_delay_ms": (0, 1000),
    "max_queue": (1, 1_000_000),
    "timeout_ms": (1, 600_000),
}
TARGET_P99_MAX_MS = 600_000
DISPATCH_POLICIES = ("adaptive", "fixed", "default")  # "default": the deployment's TORCHWIRE_DISPATCH_POLICY

# Called after a promotion commits, with (model name, version number or None); the serving layer
# registers itself here so the registry does not import it.


def _check_maintainer(actor: User) -> None:
    if not actor.has_role(Role.MAINTAINER):
        raise Forbidden("this action needs the maintainer role or higher")


def model_name_check(*, name: object, field: str = "name") -> None:
    """Raises Invalid unless ``name`` is a valid model name (it becomes a storage key and a topic)."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise Invalid(f"{field}: model name must be {NAME_RULE}",
                      details=[{"loc": ["body", field], "field": field, "msg": f"invalid name: {NAME_RULE}"}])


def model_name_taken(name: str) -> Conflict:
    """The one answer for a taken name, whoever owns the model and whether or not the caller can see it:
    names are one namespace, so that a name is taken is all a caller learns (docs/security.md)."""
    return Conflict(f"a model named {name!r} already exists")


def model_create(*, owner: User, name: str, description: str = "", visibility: str = Visibility.PRIVATE) -> MlModel:
    _check_maintainer(owner)
    model_name_check(name=name)
    if visibility not in Visibility.values:
        raise Invalid(f"visibility must be one of {', '.join(Visibility.values)}")
    try:
        with transaction.atomic():
            return MlModel.objects.create(name=name, description=description, owner=owner, visibility=visibility)
    except IntegrityError as exc:
        raise model_name_taken(name) from exc


def model_check_manage(*, actor: User, model: MlModel) -> None:
    """Forbidden unless ``actor`` may change ``model``: its owner (maintainer or higher) or an admin."""
    if not (actor.has_role(Role.ADMIN) or (model.owner_id == actor.pk and actor.has_role(Role.MAINTAINER))):
        raise Forbidden("only the model's owner (maintainer or higher) or an admin can change it")


def model_settings_errors(*, changes: dict[str, Any]) -> list[dict[str, Any]]:
    """What is wrong with the serving config and visibility in ``changes`` (sharing is checked against
    the users by `model_update`)."""
    errors = []
    for field, (low, high) in SERVING_LIMITS.items():
        if field in changes and changes[field] is not None:
            value = changes[field]
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                errors.append({"loc": [field], "field": field, "msg": f"must be a number in [{low:g}, {high:g}]"})
            elif field != "max_delay_ms" and int(value) != value:
                errors.append({"loc": [field], "field": field, "msg": "must be an integer"})
    target = changes.get("target_p99_ms")
    if target is not None and (
        not isinstance(target, int | float) or isinstance(target, bool) or not 0 < target <= TARGET_P99_MAX_MS
    ):
        errors.append({"loc": ["target_p99_ms"], "field": "target_p99_ms",
                       "msg": f"must be a number in (0, {TARGET_P99_MAX_MS}] or null"})
    policy = changes.get("dispatch_policy")
    if policy is not None and policy not in DISPATCH_POLICIES:
        errors.append({"loc": ["dispatch_policy"], "field": "dispatch_policy",
                       "msg": f"one of {list(DISPATCH_POLICIES)}"})
    device = changes.get("device")
    if device is not None and (not isinstance(device, str) or DEVICE_RE.fullmatch(device) is None):
        errors.append({"loc": ["device"], "field": "device", "msg": "must be auto, cpu, cuda or cuda:N"})
    visibility = changes.get("visibility")
    if visibility is not None and visibility not in Visibility.values:
        errors.append({"loc": ["visibility"], "field": "visibility", "msg": f"one of {Visibility.values}"})
    return errors


def model_update(*, model: MlModel, actor: User, changes: dict[str, Any]) -> MlModel:
    """Applies serving config, description, visibility and sharing; all or nothing."""
    model_check_manage(actor=actor, model=model)
    errors = model_settings_errors(changes=changes)
    sharing = changes.get("sharing")
    users: list[User] = []
    if sharing is not None:
        users = list(User.objects.filter(username__in=sharing, is_active=True))
        unknown = sorted(set(sharing) - {u.username for u in users})
        if unknown:
            errors.append({"loc": ["sharing"], "field": "sharing", "msg": f"unknown users: {', '.join(unknown)}"})
    if errors:
        raise Invalid(f"invalid model settings: {errors[0]['field']}: {errors[0]['msg']}", details=errors)
    with transaction.atomic():
        locked = MlModel.objects.select_for_update().get(pk=model.pk)
        for field in (*SERVING_LIMITS, "device", "description", "visibility"):
            if changes.get(field) is not None:
                value = changes[field]
                if field in ("max_batch_size", "max_queue", "timeout_ms"):
                    value = int(value)
                setattr(locked, field, value)
        if changes.get("dispatch_policy") is not None:
            locked.dispatch_policy = "" if changes["dispatch_policy"] == "default" else changes["dispatch_policy"]
        if "target_p99_ms" in changes:  # null clears it
            target = changes["target_p99_ms"]
            locked.target_p99_ms = None if target is None else float(target)
        locked.save()
        if sharing is not None:
            locked.shared_with.set(users)
        name = locked.name
        invalidation.changed_on_commit(invalidation.MODEL, (name, None))
    return locked


def model_version_create(
    *,
    model: MlModel,
    actor: User,
    fmt: str,
    architecture: str,
    config: dict[str, Any],
    signature: dict[str, Any],
    artifact_key: str,
    artifact_sha256: str,
    artifact_size: int,
    extras: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    stage: str = Stage.NONE,
    source_job_id: int | None = None,
) -> ModelVersion:
    """Registers version N+1 for an artifact already validated and stored. The model row is locked so
    concurrent uploads get consecutive numbers; a ``source_job_id`` makes the call idempotent per job.

    A version trained by one of our jobs (``source_job_id``) may go to a model its owner owns whatever
    their role: the artifact comes from our own trainer, not an upload, so members can train models.
    """
    if source_job_id is None:
        model_check_manage(actor=actor, model=model)
    elif not (actor.has_role(Role.ADMIN) or model.owner_id == actor.pk):
        raise Forbidden("a training job can only register versions on its owner's models")
    with transaction.atomic():
        locked = MlModel.objects.select_for_update().get(pk=model.pk)
        if source_job_id is not None:
            existing = ModelVersion.objects.filter(source_job_id=source_job_id).first()
            if existing is not None:
                return existing
        last = ModelVersion.objects.filter(model=locked).order_by("-number").values_list("number", flat=True).first()
        version = ModelVersion.objects.create(
            model=locked,
            number=(last or 0) + 1,
            format=fmt,
            architecture=architecture,
            config=config,
            signature=signature,
            artifact_key=artifact_key,
            artifact_sha256=artifact_sha256,
            artifact_size=artifact_size,
            extras=extras or {},
            metrics=metrics or {},
            created_by=actor,
            source_job_id=source_job_id,
        )
        _model_event_on_commit(locked.name, "version_created", {"version": version.number, "format": fmt})
    if stage != Stage.NONE:
        by_job = source_job_id is not None
        reason = f"requested by training job {source_job_id}" if by_job else ""
        version = model_version_promote(version=version, stage=stage, actor=actor, by_job=by_job, reason=reason)
    return version


def model_version_promote(
    *, version: ModelVersion, stage: str, actor: User, by_job: bool = False, reason: str = ""
) -> ModelVersion:
    """Moves ``version`` to ``stage``. Promotion to production archives the previous production version
    in the same transaction, so exactly one is in production at any instant; every stage change is
    recorded as a `StageChange` row in that transaction too. ``by_job``: the promotion a training job
    asked for (``promote: true``), allowed to the model's owner whatever their role."""
    if not by_job:
        model_check_manage(actor=actor, model=version.model)
    if stage not in (Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED):
        raise Invalid("stage must be one of staging, production, archived")
    with transaction.atomic():
        model = MlModel.objects.select_for_update().get(pk=version.model_id)
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        now = timezone.now()
        changes: list[StageChange] = []
        if stage == Stage.PRODUCTION:
            replaced = list(ModelVersion.objects.filter(model=model, stage=Stage.PRODUCTION).exclude(pk=locked.pk))
            changes += [
                _change(model, old, Stage.ARCHIVED, StageChange.Action.REPLACED, actor, now,
                        f"replaced by version {locked.number}")
                for old in replaced
            ]
            ModelVersion.objects.filter(pk__in=[old.pk for old in replaced]).update(stage=Stage.ARCHIVED)
        from_stage = locked.stage
        if from_stage != stage:
            changes.append(_change(model, locked, stage, StageChange.Action.PROMOTE, actor, now, reason))
        StageChange.objects.bulk_create(changes)
        locked.stage = stage
        locked.promoted_at = now
        locked.save(update_fields=["stage", "promoted_at"])
        name, number = model.name, locked.number
        invalidation.changed_on_commit(invalidation.MODEL, (name, number))
        _model_event_on_commit(name, "promoted", {"version": number, "stage": stage, "from_stage": from_stage,
                                                  "actor": actor.username, "reason": reason})
    return locked


def _change(model: MlModel, version: ModelVersion, to_stage: str, action: str, actor: User | None,
            at: Any, reason: str) -> StageChange:
    return StageChange(model=model, version=version, from_stage=version.stage, to_stage=to_stage, action=action,
                       actor=actor, reason=reason[:500], at=at)


def _rollback_target(model: MlModel, current: ModelVersion | None) -> int | None:
    """The version a rollback restores: the production lineage is a stack that promotions to production
    push and rollbacks pop; the target is the entry under the current production version (or, when no
    version is in production, the last one that was)."""
    stack: list[int] = []
    rows = StageChange.objects.filter(model=model, to_stage=Stage.PRODUCTION).order_by("id")
    for version_id, action in rows.values_list("version_id", "action"):
        if action == StageChange.Action.ROLLBACK and len(stack) > 1 and stack[-1] != version_id:
            stack.pop()
        if not stack or stack[-1] != version_id:
            stack.append(version_id)
    if current is not None:
        while stack and stack[-1] == current.pk:
            stack.pop()
    return stack[-1] if stack else None


def model_rollback(*, model: MlModel, actor: User, reason: str = "") -> tuple[ModelVersion, ModelVersion | None]:
    """Moves production back to the previous production version atomically: the current one is archived
    and the previous one restored in one transaction, both recorded as stage changes. Returns
    (restored, rolled back from). Conflict when there is no previous production version."""
    model_check_manage(actor=actor, model=model)
    with transaction.atomic():
        locked = MlModel.objects.select_for_update().get(pk=model.pk)
        current = ModelVersion.objects.select_for_update().filter(model=locked, stage=Stage.PRODUCTION).first()
        target_id = _rollback_target(locked, current)
        if target_id is None:
            raise Conflict(f"model {locked.name!r} has no previous production version to roll back to")
        target = ModelVersion.objects.select_for_update().get(pk=target_id)
        now = timezone.now()
        note = reason or (f"rollback from version {current.number}" if current else "rollback")
        changes = [_change(locked, target, Stage.PRODUCTION, StageChange.Action.ROLLBACK, actor, now, note)]
        if current is not None:
            changes.insert(0, _change(locked, current, Stage.ARCHIVED, StageChange.Action.ROLLBACK, actor, now, note))
            current.stage = Stage.ARCHIVED
            current.save(update_fields=["stage"])
        StageChange.objects.bulk_create(changes)
        target.stage = Stage.PRODUCTION
        target.promoted_at = now
        target.save(update_fields=["stage", "promoted_at"])
        name, number = locked.name, target.number
        previous = current.number if current else None
        invalidation.changed_on_commit(invalidation.MODEL, (name, number))
        _model_event_on_commit(name, "rolled_back", {"version": number, "from_version": previous,
                                                     "actor": actor.username, "reason": note})
    return target, current


def _model_event_on_commit(name: str, type: str, data: dict[str, Any]) -> None:
    """Publishes on ``model:<name>`` once the surrounding transaction commits."""
    publish_on_commit(f"model:{name}", type, {"model": name, **data})


def _manifest_error(message: str, field: str) -> Invalid:
    details = [{"loc": ["manifest", field], "field": field, "msg": message}]
    return Invalid(f"invalid manifest: {message}", details=details)


# A manifest is a format, an architecture, a config and a signature: a few KB, a few levels deep.
MANIFEST_MAX_BYTES = 256 * 1024
MANIFEST_MAX_DEPTH = 16


def manifest_parse(raw: str) -> dict[str, Any]:
    """Checks the manifest's shape; the artifact itself is checked by ``model_version_publish``."""
    try:
        manifest = jsonio.loads(raw, max_depth=MANIFEST_MAX_DEPTH, max_bytes=MANIFEST_MAX_BYTES)
    except jsonio.JsonLimitExceeded as exc:
        raise _manifest_error(f"refused: {exc}", "manifest") from None
    except ValueError as exc:
        raise _manifest_error(f"not valid JSON ({exc})", "manifest") from exc
    if not isinstance(manifest, dict):
        raise _manifest_error("must be a JSON object", "manifest")
    unknown = set(manifest) - {"format", "architecture", "config", "signature"}
    if unknown:
        raise _manifest_error(f"unknown keys {sorted(unknown)}", sorted(unknown)[0])
    fmt = manifest.get("format", "safetensors")
    if fmt not in ("safetensors", "torchscript", "torch_export"):
        raise _manifest_error(
            f"format {fmt!r} is not accepted; use safetensors (or torchscript/torch_export where allowed). "
            "Pickle and torch.save checkpoints are never accepted.",
            "format",
        )
    architecture = manifest.get("architecture") or ""
    config = manifest.get("config") or {}
    if not isinstance(config, dict):
        raise _manifest_error("config must be an object", "config")
    if fmt == "safetensors":
        if not architecture:
            raise _manifest_error("a safetensors artifact needs an architecture", "architecture")
        try:
            config = architectures.validate_config(architecture, config)
        except ArchitectureError as exc:
            raise _manifest_error(exc.message, "config") from exc
    raw_signature = manifest.get("signature")
    if raw_signature is None and fmt == "safetensors":
        default = architectures.default_signature(architecture, config)
        if default is None:
            raise _manifest_error("signature is required for this architecture", "signature")
        raw_signature = default.to_dict()
    if not isinstance(raw_signature, dict):
        raise _manifest_error("signature is required: {inputs: [...], outputs: [...]}", "signature")
    try:
        signature = Signature.from_dict(raw_signature)
    except SignatureError as exc:
        raise _manifest_error(exc.message, "signature") from exc
    return {"format": fmt, "architecture": architecture, "config": config, "signature": signature.to_dict()}


# Publishing loads each artifact once more (see `_dry_run`); at most this many at a time per process.
_dry_runs = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="publish-dry-run")


async def _dry_run(artifact_path: str, manifest: dict[str, Any]) -> None:
    """Runs the version's warm-up (`inference.runner.dry_run`) before it is stored: a signature that
    contradicts the model would otherwise be accepted and then fail every call with model_load_failed.
    Bounded: on a thread of its own pool, for at most ``PUBLISH_DRY_RUN_SECONDS`` (time spent waiting
    for a free thread included), with inputs bounded by ``MAX_INPUT_ELEMENTS``."""
    import asyncio

    from django.conf import settings


    signature = Signature.from_dict(manifest["signature"])
    run = functools.partial(dry_run, artifact_path, manifest["format"], manifest["architecture"] or None,
                            manifest["config"], signature, max_elements=settings.MAX_INPUT_ELEMENTS,
                            allow_code=settings.ALLOW_CODE_ARTIFACTS)
    seconds = settings.PUBLISH_DRY_RUN_SECONDS
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_dry_runs, run), seconds)
    except TimeoutError as exc:
        raise Invalid(f"the model did not finish a one-row forward pass within {seconds:g}s; it was not published",
                      details={"reason": "dry_run_timeout"}) from exc
    except SignatureError as exc:
        raise _manifest_error(exc.message, "signature") from exc
    except ArtifactError as exc:
        raise Invalid(exc.message, details=exc.details) from exc


async def model_version_publish(*, model: MlModel, actor: User, artifact_path: str, manifest: dict[str, Any],
                                stage: str = Stage.NONE) -> ModelVersion:
    """Validates an uploaded artifact without executing it, stores it with its sha256 and registers it.

    Runs on the event loop; file checks go to a thread. If registering fails the stored object is removed.
    """
    import asyncio
    import uuid

    from asgiref.sync import sync_to_async
    from django.conf import settings


    await sync_to_async(model_check_manage)(actor=actor, model=model)
    fmt = manifest["format"]
    if fmt in ("torchscript", "torch_export") and not settings.ALLOW_CODE_ARTIFACTS:
        raise Forbidden(
            f"{fmt} artifacts execute code when loaded; this server only accepts them when the operator sets "
            "TORCHWIRE_ALLOW_CODE_ARTIFACTS=true",
            details={"reason": "code_artifacts_disabled", "format": fmt},
        )
    try:
        await asyncio.to_thread(
            formats.validate_artifact,
            artifact_path,
            fmt,
            architecture=manifest["architecture"] or None,
            config=manifest["config"],
            allow_code=settings.ALLOW_CODE_ARTIFACTS,
        )
    except ArtifactForbidden as exc:
        raise Forbidden(exc.message, details=exc.details) from exc
    except ArtifactError as exc:
        raise Invalid(exc.message, details=exc.details) from exc
    await _dry_run(artifact_path, manifest)
    from pathlib import Path

    extension = {"safetensors": "safetensors", "torchscript": "pt", "torch_export": "pt2"}[fmt]
    key = f"models/{model.name}/{uuid.uuid4().hex}.{extension}"
    storage = get_storage()
    stored = await storage.save_file(key, Path(artifact_path))
    try:
        return await sync_to_async(model_version_create)(
            model=model,
            actor=actor,
            fmt=fmt,
            architecture=manifest["architecture"],
            config=manifest["config"],
            signature=manifest["signature"],
            artifact_key=stored.key,
            artifact_sha256=stored.sha256,
            artifact_size=stored.size,
            stage=stage,
        )
    except BaseException:
        await storage.delete(key)
        raise
