"""The serving pool of this ASGI process and the one inference service all three protocols call.

`infer` is the single entry point: REST (/api/v1/models/{name}/predict), V2 (/v2/...) and the
websocket consumer all go through it, so their requests share one batcher per model version.

Production routing uses the pool's ``production`` alias. Each request compares it with the catalog
(at most `settings.CATALOG_TTL` old); when they differ a background task hot-swaps (the new version
is loaded and warmed before the alias moves, the old one drains), and requests keep going to the old
version meanwhile. So promotion needs no cross-process message and no request fails during a swap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from app.accounts.models import Role, User
from app.core import invalidation
from app.core.errors import Forbidden, NotFound
from app.core.lifecycle import state
from app.core.storage import get_storage
from app.monitoring import metrics
from inference.batcher import BatchConfig, Priority
from inference.errors import ModelNotFound, ShuttingDown
from inference.pool import LoadedModel, ModelPool
from inference.signature import Signature

from . import catalog, livestats

logger = logging.getLogger(__name__)
PRODUCTION = "production"

_pool: ModelPool | None = None
_swaps: dict[str, asyncio.Task[None]] = {}
# Told of this process's hot swaps as (model, event type, data), on the event loop; realtime registers
# the publisher that announces them on ``model:<name>`` (the console shows them live).
swap_observers: list[Callable[[str, str, dict[str, Any]], Awaitable[None]]] = []
_PROCESS = f"{os.uname().nodename}:{os.getpid()}"


@dataclass(frozen=True)
class Target:
    """A resolved call: which model, which version label the pool should use, and its signature."""

    model: catalog.ModelInfo
    version: int
    label: str  # a version number, or the production alias
    signature: Signature
    extras: dict[str, object]


def _observer(model: str, version: str) -> metrics.PrometheusBatchObserver:
    return livestats.StatsObserver(model, int(version))


async def _load(model_name: str, version_label: str) -> LoadedModel:
    info = await catalog.model_info(model_name)
    if info is None or not version_label.isdigit():
        raise ModelNotFound(f"model {model_name!r} version {version_label!r} not found")
    version = await catalog.version_info(info, int(version_label))
    if version is None:
        raise ModelNotFound(f"model {model_name!r} has no version {version_label}")
    path = await _cached_artifact(version)
    return LoadedModel(
        artifact_path=path,
        format=version.format,
        architecture=version.architecture or None,
        config=version.config,
        signature=Signature.from_dict(version.signature),
        device=info.device,
        batch=_batch_config(info),
        allow_code=settings.ALLOW_CODE_ARTIFACTS,
        sha256=version.artifact_sha256,  # the pool verifies it on every load
    )


async def _cached_artifact(version: catalog.VersionInfo) -> Path:
    """A local copy named by content hash, so every process and version with the same bytes shares it."""
    cache: Path = settings.ARTIFACT_CACHE_DIR
    suffix = Path(version.artifact_key).suffix
    path = cache / f"{version.artifact_sha256}{suffix}"
    if await asyncio.to_thread(path.exists):
        return path
    await asyncio.to_thread(cache.mkdir, parents=True, exist_ok=True)
    tmp = cache / f".{uuid.uuid4().hex}.part"
    try:
        await get_storage().download(version.artifact_key, tmp)
        await asyncio.to_thread(os.replace, tmp, path)
    finally:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)
    return path


def get_pool() -> ModelPool:
    global _pool
    if _pool is None:
        _pool = ModelPool(
            _load,
            memory_budget_mb=settings.MODEL_MEMORY_MB,
            torch_threads=settings.TORCH_THREADS,
            max_elements=settings.MAX_INPUT_ELEMENTS,
            observer_factory=_observer,
            drain_seconds=settings.DRAIN_SECONDS,
        )
        metrics.before_scrape(loaded_gauges)
    return _pool


async def pool_start() -> None:
    """Lifespan start (asgi.py): builds the serving pool on the server's event loop."""
    if settings.GIL_SWITCH_INTERVAL_MS > 0:
        # The runner thread takes the GIL back after every torch op; at Python's default of 5 ms it waits
        # up to that long each time while the event loop is busy, stretching forward passes under load.
        sys.setswitchinterval(settings.GIL_SWITCH_INTERVAL_MS / 1000)
    get_pool()


async def pool_stop() -> None:
    """Lifespan stop: drains every batcher within DRAIN_SECONDS (new requests already see draining)."""
    global _pool
    if _pool is not None:
        await _pool.shutdown(settings.DRAIN_SECONDS)
        _pool = None


def _on_registry_change(name: str, version: int | None) -> None:
    """Called on commit of a promotion or settings change in this process, on whatever thread ran the
    transaction: only the catalog entry is dropped here; requests pick the change up (`_apply_settings`)."""
    catalog.forget(name)


def _batch_config(info: catalog.ModelInfo) -> BatchConfig:
    return BatchConfig(max_batch_size=info.max_batch_size, max_delay_ms=info.max_delay_ms, max_queue=info.max_queue,
                       timeout_ms=info.timeout_ms, dispatch_policy=info.dispatch_policy or settings.DISPATCH_POLICY,
                       target_p99_ms=info.target_p99_ms)


_applied: dict[str, tuple[BatchConfig, str]] = {}
_checked: dict[str, catalog.ModelInfo] = {}  # the catalog entry last compared: a new one every CATALOG_TTL


def _apply_settings(pool: ModelPool, info: catalog.ModelInfo) -> None:
    """Brings loaded versions in line with the model's serving settings (each process sees a change
    within the catalog's TTL). Batch settings apply in place: the batcher reads its config for every
    batch, so nothing is unloaded and no request fails. A new device needs a reload, done in the
    background while the old copy keeps serving what it holds."""
    if _checked.get(info.name) is info:
        return
    _checked[info.name] = info
    wanted = (_batch_config(info), info.device)
    if _applied.get(info.name) == wanted:
        return
    _applied[info.name] = wanted
    for served in pool.loaded():
        if served.model != info.name:
            continue
        if served.spec.device != info.device:
            asyncio.get_running_loop().create_task(pool.unload(info.name, served.version))
        else:
            served.batcher.config = wanted[0]


invalidation.on_change(invalidation.MODEL, lambda key: _on_registry_change(*key))  # type: ignore[misc]


async def _tell_swap(name: str, type: str, data: dict[str, Any]) -> None:
    for observer in swap_observers:
        try:
            await observer(name, type, {"process": _PROCESS, **data})
        except Exception:
            logger.exception("a swap observer failed on %s for model %s", type, name)


async def _swap(name: str, version: int) -> None:
    pool = get_pool()
    previous = pool.aliases(name).get(PRODUCTION)
    started = time.monotonic()
    await _tell_swap(name, "serving.swap_started", {"version": version, "from_version": previous})
    try:
        await pool.alias(name, str(version), name=PRODUCTION)
    except Exception as exc:
        logger.exception("hot swap of %s to version %s failed; still serving the previous version", name, version)
        await _tell_swap(name, "serving.swap_failed", {"version": version, "from_version": previous,
                                                       "error": getattr(exc, "message", type(exc).__name__)})
    else:
        await _tell_swap(name, "serving.swap_done", {"version": version, "from_version": previous,
                                                     "seconds": round(time.monotonic() - started, 3)})
    finally:
        _swaps.pop(name, None)


async def resolve(user: User, name: str, version: int | None) -> Target:
    """Access check and version choice for an inference call. Viewers read but do not call models."""
    if state.draining:
        raise ShuttingDown("the server is shutting down; retry on another instance")
    info = await catalog.model_for(user, name)
    if not user.has_role(Role.MEMBER):
        raise Forbidden("calling a model needs the member role or higher")
    pool = get_pool()
    _apply_settings(pool, info)
    if version is not None:
        number, label = version, str(version)
    else:
        if info.production is None:
            pool.unalias(name, PRODUCTION)
            raise NotFound(f"model {name!r} has no production version; promote one or pass a version")
        current = pool.alias_of(name, PRODUCTION)
        if current is None:
            await pool.alias(name, str(info.production), name=PRODUCTION)
        elif current != str(info.production) and name not in _swaps:
            _swaps[name] = asyncio.get_running_loop().create_task(_swap(name, info.production))
        number, label = int(pool.resolve(name, PRODUCTION)), PRODUCTION
    found = await catalog.version_info(info, number)
    if found is None:
        raise NotFound(f"model {name!r} has no version {number}")
    return Target(model=info, version=number, label=label, signature=found.parsed_signature, extras=found.extras)


def deadline_for(target: Target, timeout_ms: float | None) -> float:
    ms = target.model.timeout_ms if timeout_ms is None else timeout_ms
    return time.monotonic() + max(ms, 0) / 1000.0


async def infer(target: Target, inputs: dict[str, np.ndarray], *, deadline: float, protocol: str,
                priority: Priority = Priority.NORMAL) -> tuple[int, dict[str, np.ndarray]]:
    """Runs ``inputs`` through the shared batcher; returns the version that answered and its outputs.

    Records request metrics. Raises the `inference.errors` exceptions; callers map them to their
    protocol's error format.
    """
    started = time.perf_counter()
    status = "ok"
    version = target.version
    try:
        async with get_pool().hold(target.model.name, target.label) as served:
            version = int(served.version)
            outputs = await served.infer(inputs, deadline=deadline, priority=priority)
        return version, outputs
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    except Exception as exc:
        status = getattr(exc, "code", "error")
        raise
    finally:
        seconds = time.perf_counter() - started
        metrics.inference_request(model=target.model.name, version=str(version), protocol=protocol, status=status,
                                  seconds=seconds)
        livestats.request(model=target.model.name, seconds=seconds, status=status)


def batching_stats(name: str) -> list[dict[str, object]]:
    """What the batchers of ``name``'s loaded versions in this process measured and chose (per process:
    each serving process tunes its own)."""
    pool = _pool
    if pool is None:
        return []
    loaded = sorted((s for s in pool.loaded() if s.model == name), key=lambda s: int(s.version))
    return [{"version": int(s.version), **s.batcher.stats()} for s in loaded]


def loaded_gauges() -> None:
    pool = _pool
    if pool is None:
        return
    metrics.LOADED_MODELS.set(len(pool.loaded()))
    for served in pool.loaded():
        metrics.LOADED_MEMORY.labels(served.model, served.version).set(served.memory_bytes)
