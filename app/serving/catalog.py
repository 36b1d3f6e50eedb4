"""What the serving path needs to know about a model, cached briefly in each process.

A request must not cost several queries, so each process keeps a `ModelInfo` per model for
``settings.CATALOG_TTL`` seconds (TORCHWIRE_CATALOG_TTL_SECONDS). Within that time an access change or
promotion may not be seen by another process; the process that made the change drops its entry at once (on commit).

While the database is unreachable (`app.core.db.outage`), or slower than `STALE_WAIT_SECONDS` to
refresh an entry, the expired entry keeps answering for up to ``DB_OUTAGE_STALE_SECONDS``, so models
already called keep serving; a model never looked up gets `DatabaseUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.conf import settings

from app.accounts.models import Role, User
from app.core.db import STALE_WAIT_SECONDS, DatabaseUnavailable, db_async, outage
from app.core.errors import NotFound
from app.registry.models import MlModel, ModelVersion, Stage, Visibility
from inference.signature import Signature


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    owner_id: int
    visibility: str
    shared_with: frozenset[int]
    production: int | None
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    timeout_ms: int
    device: str
    dispatch_policy: str  # "" for the deployment default
    target_p99_ms: float | None

    def readable_by(self, user: User) -> bool:
        return (
            user.has_role(Role.ADMIN)
            or self.owner_id == user.pk
            or self.visibility == Visibility.PUBLIC
            or (self.visibility == Visibility.SHARED and user.pk in self.shared_with)
        )


@dataclass(frozen=True)
class VersionInfo:
    number: int
    format: str
    architecture: str
    config: dict[str, Any]
    signature: dict[str, Any]
    artifact_key: str
    artifact_sha256: str
    stage: str
    extras: dict[str, Any]

    @cached_property
    def parsed_signature(self) -> Signature:
        """Parsed once per process: versions are immutable."""
        return Signature.from_dict(self.signature)


_models: dict[str, tuple[float, ModelInfo | None]] = {}
_versions: dict[tuple[int, int], VersionInfo] = {}
# One query per model when an entry expires, however many requests miss on it at once.
_fetching: dict[str, asyncio.Future[ModelInfo | None]] = {}


def _fetch_model(name: str) -> ModelInfo | None:
    model = MlModel.objects.filter(name=name).first()
    if model is None:
        return None
    production = (
        ModelVersion.objects.filter(model=model, stage=Stage.PRODUCTION).values_list("number", flat=True).first()
    )
    return ModelInfo(
        id=model.pk,
        name=model.name,
        owner_id=model.owner_id,
        visibility=model.visibility,
        shared_with=frozenset(model.shared_with.values_list("pk", flat=True)),
        production=production,
        max_batch_size=model.max_batch_size,
        max_delay_ms=model.max_delay_ms,
        max_queue=model.max_queue,
        timeout_ms=model.timeout_ms,
        device=model.device,
        dispatch_policy=model.dispatch_policy,
        target_p99_ms=model.target_p99_ms,
    )


def _fetch_version(model_id: int, number: int) -> VersionInfo | None:
    v = ModelVersion.objects.filter(model_id=model_id, number=number).first()
    if v is None:
        return None
    return VersionInfo(
        number=v.number,
        format=v.format,
        architecture=v.architecture,
        config=v.config,
        signature=v.signature,
        artifact_key=v.artifact_key,
        artifact_sha256=v.artifact_sha256,
        stage=v.stage,
        extras=v.extras,
    )


async def model_info(name: str) -> ModelInfo | None:
    now = time.monotonic()
    cached = _models.get(name)
    if cached is not None and cached[0] > now:
        return cached[1]
    stale = cached is not None and cached[0] + settings.DB_OUTAGE_STALE_SECONDS > now
    if stale and outage.down:
        outage.served_stale()
        return cached[1] if cached else None
    pending = _fetching.get(name)
    if pending is None or pending.get_loop() is not asyncio.get_running_loop():
        pending = _fetching[name] = asyncio.ensure_future(_refresh(name, now))
    # Shielded: a caller that goes away (or stops waiting) must not cancel the lookup the others wait for.
    if not stale:
        return await asyncio.shield(pending)
    try:
        return await asyncio.wait_for(asyncio.shield(pending), STALE_WAIT_SECONDS)
    except (TimeoutError, DatabaseUnavailable):
        outage.served_stale()
        return cached[1] if cached else None


async def _refresh(name: str, now: float) -> ModelInfo | None:
    try:
        info = await db_async(_fetch_model)(name)
        _models[name] = (now + settings.CATALOG_TTL, info)
        return info
    finally:
        if _fetching.get(name) is asyncio.current_task():
            del _fetching[name]


async def version_info(model: ModelInfo, number: int) -> VersionInfo | None:
    """Versions never change except their stage, so they are cached without expiry (stage aside)."""
    key = (model.id, number)
    cached = _versions.get(key)
    if cached is None:
        cached = await db_async(_fetch_version)(model.id, number)
        if cached is None:
            return None
        _versions[key] = cached
    return cached


async def model_for(user: User, name: str) -> ModelInfo:
    """The model if ``user`` may read it, else NotFound (the same answer as for a missing model)."""
    info = await model_info(name)
    if info is None or not info.readable_by(user):
        raise NotFound(f"model {name!r} not found")
    return info


def forget(name: str) -> None:
    """Drops ``name``'s entry; the next request looks it up afresh."""
    _models.pop(name, None)
    _fetching.pop(name, None)


def forget_all() -> None:
    _models.clear()
    _versions.clear()
