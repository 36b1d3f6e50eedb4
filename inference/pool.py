"""The model versions a process serves: on-demand loading, a memory budget, aliases and hot swap.

Public API::

    pool = ModelPool(load, memory_budget_mb=4096, torch_threads=1, max_elements=1_000_000,
                     observer_factory=None, drain_seconds=30.0)
    outputs = await pool.infer("iris", "production", {"input": rows}, deadline=None, priority=Priority.NORMAL)
    async with pool.hold("iris", "production") as served:   # ServedModel, held while in the block
        outputs = await served.infer({"input": rows}); served.version
    await pool.alias("iris", "7")            # hot swap: load + warm 7, move "production", retire the old one
    served = await pool.get("iris", "7")     # ServedModel: runner, batcher, signature ...
    await pool.unload("iris", "6"); await pool.shutdown(drain_seconds=30)

The app supplies ``load(model, version) -> LoadedModel`` (an async callable): where the artifact
is and how to serve it. It should raise `ModelNotFound` for unknown names, which the pool passes
through; any other failure to load becomes `ModelLoadError`. Keeping that lookup in the app keeps
this module free of Django and storage concerns.

Versions and aliases share one namespace per model: `infer`/`get` first look the name up among
the aliases set with `alias()`, and otherwise treat it as a version. The pool learns aliases only
through `alias()`; the app sets them at start-up and on every promotion.

All methods must be called from the one event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.batcher import BatchConfig, Batcher, BatchObserver, Priority
from inference.errors import InferenceError, ModelLoadError, ModelNotFound, ShuttingDown
from inference.formats import sha256_file
from inference.runner import Runner
from inference.signature import Signature, validate_inputs

__all__ = ["LoadedModel", "Loader", "ModelPool", "ServedModel"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class LoadedModel:
    """Everything needed to serve one model version, as the app's loader describes it."""

    artifact_path: str | os.PathLike[str]
    format: str
    architecture: str | None
    config: Mapping[str, Any] | None
    signature: Signature
    device: str = "auto"
    batch: BatchConfig = field(default_factory=BatchConfig)
    allow_code: bool = False
    sha256: str | None = None  # when set, the file must hash to it before it is loaded


Loader = Callable[[str, str], Awaitable[LoadedModel]]


@dataclass(eq=False)
class ServedModel:
    model: str
    version: str
    spec: LoadedModel
    runner: Runner
    batcher: Batcher
    max_elements: int
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0  # requests holding this version: it is not evicted or retired under them
    unused: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def signature(self) -> Signature:
        return self.spec.signature

    @property
    def memory_bytes(self) -> int:
        return self.runner.memory_bytes

    async def infer(self, inputs: Mapping[str, np.ndarray], *, deadline: float | None = None,
                    priority: Priority = Priority.NORMAL) -> dict[str, np.ndarray]:
        """Validate `inputs` against the signature and run them through the batcher. Call it while
        holding this version (`ModelPool.hold`), or it may be retired under the request."""
        valid = validate_inputs(self.signature, inputs, self.max_elements)
        return await self.batcher.submit(valid, deadline, priority)


class _Hold:
    """`ModelPool.hold`: a plain class rather than `asynccontextmanager`, whose generator machinery was a
    visible cost on a path every request takes."""

    __slots__ = ("model", "pool", "served", "version")

    def __init__(self, pool: ModelPool, model: str, version: str) -> None:
        self.pool, self.model, self.version = pool, model, version

    async def __aenter__(self) -> ServedModel:
        self.served = await self.pool._acquire(self.model, self.version)
        return self.served

    async def __aexit__(self, *exc: object) -> None:
        self.pool._release(self.served)


class ModelPool:
    def __init__(
        self,
        loader: Loader,
        *,
        memory_budget_mb: float | None = None,
        torch_threads: int = 1,
        max_elements: int = 1_000_000,
        observer_factory: Callable[[str, str], BatchObserver | None] | None = None,
        drain_seconds: float = 30.0,
    ) -> None:
        self._loader = loader
        self._budget = None if memory_budget_mb is None else int(memory_budget_mb * 1024 * 1024)
        self._torch_threads = torch_threads
        self._max_elements = max_elements
        self._observer_factory = observer_factory
        self._drain_seconds = drain_seconds
        self._models: dict[Key, ServedModel] = {}
        self._loading: dict[Key, asyncio.Task[None]] = {}
        self._aliases: dict[Key, str] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def memory_bytes(self) -> int:
        return sum(s.memory_bytes for s in self._models.values())

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    def resolve(self, model: str, version: str) -> str:
        """The version an alias points at, or `version` itself if it is not an alias."""
        return self._aliases.get((model, version), version)

    def alias_of(self, model: str, name: str = "production") -> str | None:
        """The version alias ``name`` of ``model`` points at, if it is set."""
        return self._aliases.get((model, name))

    def aliases(self, model: str) -> dict[str, str]:
        return {name: v for (m, name), v in self._aliases.items() if m == model}

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        *,
        deadline: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> dict[str, np.ndarray]:
        """Validate `inputs` against the version's signature and run them through its batcher.

        `version` may be an alias. `deadline` is on the `time.monotonic()` clock and covers
        queueing and compute, not a first load. Raises `InputError`, `ModelNotFound`,
        `ModelLoadError` and whatever `Batcher.submit` raises.
        """
        async with self.hold(model, version) as served:
            return await served.infer(inputs, deadline=deadline, priority=priority)

    def hold(self, model: str, version: str) -> contextlib.AbstractAsyncContextManager[ServedModel]:
        """The served version (`version` may be an alias), kept from eviction and retirement while
        the block runs. For callers that need more than `infer` gives, e.g. the concrete version::

            async with pool.hold("iris", "production") as served:
                outputs = await served.infer(inputs)
                respond(served.version, outputs)
        """
        return _Hold(self, model, version)

    async def get(self, model: str, version: str) -> ServedModel:
        """The served version (loading it if needed), e.g. for its signature. Not held: use `infer`."""
        served = await self._acquire(model, version)
        self._release(served)
        return served

    async def alias(self, model: str, version: str, *, name: str = "production") -> None:
        """Point alias `name` at `version` without failing a request.

        The new version is loaded and warmed up first; then the alias moves (atomically, for
        requests resolved after this point); then the version it pointed at, if no other alias
        still does, is retired: requests already holding it finish, then it is drained and freed.
        Returns once the old version is freed.
        """
        served = await self._acquire(model, version)
        self._release(served)
        # No await from here to the flip, so the loaded version cannot be evicted in between.
        version = served.version  # `version` may itself have been an alias
        previous = self._aliases.get((model, name))
        self._aliases[(model, name)] = version
        logger.info("alias %s/%s -> %s (was %s)", model, name, version, previous)
        if previous is not None and previous != version and previous not in self.aliases(model).values():
            await self._retire((model, previous), self._drain_seconds)

    def unalias(self, model: str, name: str = "production") -> None:
        self._aliases.pop((model, name), None)

    async def unload(self, model: str, version: str, *, drain_seconds: float | None = None) -> bool:
        """Drain and free a version; True if it was loaded. Later requests for it load it again."""
        key = (model, self.resolve(model, version))
        if key not in self._models:
            return False
        await self._retire(key, self._drain_seconds if drain_seconds is None else drain_seconds)
        return True

    async def shutdown(self, drain_seconds: float) -> None:
        """Refuse new requests (`ShuttingDown`), let queued ones finish within `drain_seconds`, free all."""
        self._closing = True
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*(self._retire(key, drain_seconds) for key in list(self._models)))
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # -- holding, loading, retiring ----------------------------------------------------------

    async def _acquire(self, model: str, version: str) -> ServedModel:
        key = (model, self.resolve(model, version))
        while True:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            served = self._models.get(key)
            if served is not None:
                served.in_use += 1
                served.unused.clear()
                served.last_used = time.monotonic()
                return served
            task = self._loading.get(key)
            if task is None:
                task = asyncio.create_task(self._load(key), name=f"load-{model}-{key[1]}")
                self._loading[key] = task
                task.add_done_callback(functools.partial(self._loaded, key))
            # Shielded: a caller that gives up must not abort a load that others wait for. Once it
            # finishes, the loop picks the model up (or loads again if it was evicted meanwhile).
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and not (current and current.cancelling()):
                    raise ShuttingDown("the server is shutting down") from None
                raise

    def _loaded(self, key: Key, task: asyncio.Task[None]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaited is not logged twice

    def _release(self, served: ServedModel) -> None:
        served.in_use -= 1
        served.last_used = time.monotonic()
        if served.in_use == 0:
            served.unused.set()

    async def _load(self, key: Key) -> None:
        model, version = key
        started = time.monotonic()
        try:
            spec = await self._loader(model, version)
            if spec.sha256 is not None:
                actual = await asyncio.to_thread(sha256_file, spec.artifact_path)
                if actual != spec.sha256:
                    raise ModelLoadError(
                        f"artifact of {model}/{version} is corrupt: sha256 {actual}, expected {spec.sha256}"
                    )
            runner = await Runner.load(
                spec.artifact_path,
                spec.format,
                spec.architecture,
                spec.config,
                spec.signature,
                device=spec.device,
                num_threads=self._torch_threads,
                allow_code=spec.allow_code,
            )
        except ModelNotFound:
            raise
        except ModelLoadError:
            raise
        except Exception as exc:
            cause = exc.code if isinstance(exc, InferenceError) else type(exc).__name__
            raise ModelLoadError(
                f"could not load {model}/{version}: {exc}", details={"model": model, "version": version, "cause": cause}
            ) from exc
        if self._budget is not None and runner.memory_bytes > self._budget:
            runner.close()
            raise ModelLoadError(
                f"{model}/{version} needs {runner.memory_bytes / 2**20:.1f} MiB, more than the whole "
                f"model memory budget ({self._budget / 2**20:.1f} MiB)",
                details={"model": model, "version": version, "cause": "memory_budget"},
            )
        observer = self._observer_factory(model, version) if self._observer_factory else None
        batcher = Batcher(runner, spec.batch, observer)
        await batcher.start()
        served = ServedModel(model, version, spec, runner, batcher, self._max_elements)
        served.unused.set()
        if self._closing:
            await batcher.drain(0)
            runner.close()
            raise ShuttingDown("the server is shutting down")
        self._models[key] = served
        logger.info(
            "loaded %s/%s on %s (%.1f MiB) in %.2fs",
            model,
            version,
            runner.device,
            runner.memory_bytes / 2**20,
            time.monotonic() - started,
        )
        self._evict(keep=key)

    def _evict(self, keep: Key) -> None:
        """Retire least recently used idle versions until the pool fits its budget again."""
        if self._budget is None:
            return
        while self.memory_bytes > self._budget:
            idle = [s for k, s in self._models.items() if k != keep and s.in_use == 0 and s.batcher.queued_rows == 0]
            if not idle:
                logger.warning(
                    "model memory %.1f MiB exceeds the budget of %.1f MiB and every other version is busy",
                    self.memory_bytes / 2**20,
                    self._budget / 2**20,
                )
                return
            victim = min(idle, key=lambda s: s.last_used)
            logger.info("evicting %s/%s (least recently used)", victim.model, victim.version)
            del self._models[(victim.model, victim.version)]
            task = asyncio.create_task(self._drain_and_free(victim, self._drain_seconds))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, key: Key, drain_seconds: float) -> None:
        served = self._models.pop(key, None)
        if served is not None:
            await self._drain_and_free(served, drain_seconds)

    async def _drain_and_free(self, served: ServedModel, drain_seconds: float) -> None:
        """Precondition: `served` is already out of `_models`, so no new request can hold it."""
        key = (served.model, served.version)
        deadline = time.monotonic() + drain_seconds
        # Requests that already hold it resolved their version before it was retired: let them in.
        try:
            async with asyncio.timeout(drain_seconds):
                await served.unused.wait()
        except TimeoutError:
            logger.warning("%s/%s still in use after %.1fs; draining anyway", *key, drain_seconds)
        clean = await served.batcher.drain(max(0.0, deadline - time.monotonic()))
        served.runner.close()
        logger.info("unloaded %s/%s%s", *key, "" if clean else " (some queued requests were failed)")
