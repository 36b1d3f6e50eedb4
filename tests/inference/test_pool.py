from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from inference import architectures
from inference.batcher import BatchConfig, BatchObserver
from inference.errors import InputError, ModelLoadError, ModelNotFound, ShuttingDown
from inference.formats import sha256_file
from inference.pool import LoadedModel, ModelPool

CONFIG = {"in_features": 4, "hidden": [8], "out_features": 3}
_signature = architectures.default_signature("mlp", CONFIG)
assert _signature is not None
SIGNATURE = _signature
MODEL_BYTES = (4 * 8 + 8 + 8 * 3 + 3) * 4


class Store:
    """Stands in for the app: artifacts on disk and a loader that counts its calls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: dict[str, torch.nn.Module] = {}
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.fail_next = 0
        self.sha256: dict[str, str] = {}

    def add(self, version: str, seed: int) -> None:
        torch.manual_seed(seed)
        module = architectures.build("mlp", CONFIG).eval()
        safetensors.torch.save_file(module.state_dict(), self.root / f"{version}.safetensors")
        self.modules[version] = module

    def expected(self, version: str, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.modules[version](torch.from_numpy(x)).numpy()

    async def load(self, model: str, version: str) -> LoadedModel:
        self.calls[version] += 1
        await asyncio.sleep(self.delay)
        if model != "m" or version not in self.modules:
            raise ModelNotFound(f"no model {model}/{version}")
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("object store unavailable")
        return LoadedModel(
            artifact_path=self.root / f"{version}.safetensors",
            format="safetensors",
            architecture="mlp",
            config=CONFIG,
            signature=SIGNATURE,
            device="cpu",
            batch=BatchConfig(max_batch_size=8, max_delay_ms=1),
            sha256=self.sha256.get(version),
        )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path)
    for version, seed in (("1", 1), ("2", 2), ("3", 3)):
        s.add(version, seed)
    yield s


X = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)


async def test_infer_loads_on_demand_and_validates(store: Store) -> None:
    pool = ModelPool(store.load)
    out = await pool.infer("m", "1", {"input": X})
    np.testing.assert_allclose(out["output"], store.expected("1", X), rtol=1e-6)
    with pytest.raises(InputError, match="dimension 1 must be 4"):
        await pool.infer("m", "1", {"input": np.zeros((2, 5), dtype=np.float32)})
    assert (await pool.get("m", "1")).signature == SIGNATURE
    assert store.calls["1"] == 1
    await pool.shutdown(1.0)


async def test_concurrent_first_requests_load_once(store: Store) -> None:
    store.delay = 0.05
    pool = ModelPool(store.load)
    results = await asyncio.gather(*(pool.infer("m", "1", {"input": X}) for _ in range(10)))
    assert store.calls["1"] == 1
    assert all(np.array_equal(r["output"], results[0]["output"]) for r in results)
    await pool.shutdown(1.0)


async def test_unknown_models_and_failed_loads(store: Store) -> None:
    pool = ModelPool(store.load)
    with pytest.raises(ModelNotFound):
        await pool.infer("m", "404", {"input": X})
    store.fail_next = 1
    store.delay = 0.02
    outcomes = await asyncio.gather(*(pool.infer("m", "1", {"input": X}) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, ModelLoadError) and "object store unavailable" in o.message for o in outcomes)
    assert store.calls["1"] == 1  # the waiters shared the one failed attempt
    assert (await pool.infer("m", "1", {"input": X}))["output"].shape == (2, 3)  # and a later request retries
    await pool.shutdown(1.0)


async def test_a_corrupted_artifact_is_not_loaded(store: Store) -> None:
    store.sha256["1"] = "0" * 64
    store.sha256["2"] = sha256_file(store.root / "2.safetensors")
    pool = ModelPool(store.load)
    with pytest.raises(ModelLoadError, match="corrupt"):
        await pool.infer("m", "1", {"input": X})
    assert (await pool.infer("m", "2", {"input": X}))["output"].shape == (2, 3)
    await pool.shutdown(1.0)


async def test_least_recently_used_idle_versions_are_unloaded_over_budget(store: Store) -> None:
    pool = ModelPool(store.load, memory_budget_mb=2.5 * MODEL_BYTES / 2**20)
    await pool.infer("m", "1", {"input": X})
    v2_runner = (await pool.get("m", "2")).runner
    await pool.infer("m", "1", {"input": X})  # 2 is now the least recently used
    await pool.infer("m", "3", {"input": X})
    await asyncio.sleep(0.01)
    assert sorted(s.version for s in pool.loaded()) == ["1", "3"]
    assert pool.memory_bytes == 2 * MODEL_BYTES
    with pytest.raises(RuntimeError, match="closed"):
        await v2_runner.forward({"input": X})
    await pool.infer("m", "2", {"input": X})  # loads again on demand
    assert store.calls["2"] == 2
    await pool.shutdown(1.0)


async def test_a_version_in_use_is_not_evicted(store: Store) -> None:
    pool = ModelPool(store.load, memory_budget_mb=1.5 * MODEL_BYTES / 2**20)
    v1 = await pool.get("m", "1")
    v1.in_use += 1  # as if a request were holding it
    await pool.infer("m", "2", {"input": X})
    assert sorted(s.version for s in pool.loaded()) == ["1", "2"]  # over budget, but nothing idle
    v1.in_use -= 1
    await pool.infer("m", "3", {"input": X})
    await asyncio.sleep(0.01)
    assert [s.version for s in pool.loaded()] == ["3"]
    await pool.shutdown(1.0)


async def test_a_model_bigger_than_the_budget_is_refused(store: Store) -> None:
    pool = ModelPool(store.load, memory_budget_mb=MODEL_BYTES / 2 / 2**20)
    with pytest.raises(ModelLoadError, match="more than the whole model memory budget"):
        await pool.infer("m", "1", {"input": X})
    assert pool.loaded() == []
    await pool.shutdown(1.0)


async def test_hot_swap_under_load_fails_no_request(store: Store) -> None:
    pool = ModelPool(store.load, drain_seconds=5.0)
    await pool.alias("m", "1")
    store.delay = 0.05  # a new version takes a while to load; traffic must keep flowing meanwhile
    inputs = [np.random.default_rng(i).standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(12)]
    errors: list[BaseException] = []
    served: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def client(x: np.ndarray) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                out = (await pool.infer("m", "production", {"input": x}))["output"]
            except Exception as exc:
                errors.append(exc)
                continue
            version = next((v for v in ("1", "2", "3") if np.allclose(out, store.expected(v, x), rtol=1e-5)), None)
            if version is None:
                errors.append(AssertionError("output matches no version"))
            else:
                served.append((started, version))
            await asyncio.sleep(0)

    clients = [asyncio.create_task(client(x)) for x in inputs]
    await asyncio.sleep(0.05)
    old = [await pool.get("m", "1"), await pool.get("m", "2")]
    began, swapped = {}, {}
    for version in ("2", "3"):
        began[version] = time.monotonic()
        await pool.alias("m", version)
        swapped[version] = time.monotonic()
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*clients)

    assert errors == []
    counts = Counter(v for _, v in served)
    assert min(counts["1"], counts["2"], counts["3"]) > 5
    assert all(v == "2" for t, v in served if swapped["2"] < t < began["3"])
    assert all(v == "3" for t, v in served if t > swapped["3"])
    assert [s.version for s in pool.loaded()] == ["3"]  # the old versions were drained and freed
    for retired in old:
        with pytest.raises(RuntimeError, match="closed"):
            await retired.runner.forward({"input": X})
    assert pool.aliases("m") == {"production": "3"}
    await pool.shutdown(1.0)


async def test_shutdown_drains_and_refuses_new_requests(store: Store) -> None:
    rejections: list[str] = []

    class Count(BatchObserver):
        def rejected(self, reason: str) -> None:
            rejections.append(reason)

    pool = ModelPool(store.load, observer_factory=lambda model, version: Count())
    await pool.get("m", "1")
    pending = [asyncio.create_task(pool.infer("m", "1", {"input": X})) for _ in range(20)]
    await asyncio.sleep(0)
    await pool.shutdown(2.0)
    results = await asyncio.gather(*pending)
    assert len(results) == 20
    assert pool.loaded() == []
    with pytest.raises(ShuttingDown):
        await pool.infer("m", "1", {"input": X})
    assert rejections == []


async def test_shutdown_during_a_load_refuses_its_waiters(store: Store) -> None:
    store.delay = 1.0
    pool = ModelPool(store.load)
    waiter = asyncio.create_task(pool.infer("m", "1", {"input": X}))
    await asyncio.sleep(0.01)
    await pool.shutdown(1.0)
    with pytest.raises(ShuttingDown):
        await waiter


async def test_a_v2_request_end_to_end_through_an_alias(store: Store) -> None:
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

    from inference import v2

    pool = ModelPool(store.load)
    await pool.alias("m", "2")
    item = InferInput("input", list(X.shape), "FP32")
    item.set_data_from_numpy(X, binary_data=True)
    body, header_length = InferenceServerClient.generate_request_body(
        [item], outputs=[InferRequestedOutput("output", binary_data=True)], request_id="r1", timeout=2_000_000
    )
    request = v2.decode_infer_request(body, header_length)
    deadline = time.monotonic() + request.timeout_seconds  # type: ignore[operator]
    async with pool.hold("m", "production") as served:
        names, binary = request.output_selection(served.signature.output_names)
        outputs = await served.infer(request.inputs, deadline=deadline)
    response, response_header_length = v2.encode_infer_response(
        "m", served.version, request.id, {n: outputs[n] for n in names}, binary
    )
    result = InferResult.from_response_body(response, header_length=response_header_length)
    assert result.get_response()["model_version"] == "2" and result.get_response()["id"] == "r1"
    np.testing.assert_allclose(result.as_numpy("output"), store.expected("2", X), rtol=1e-6)
    await pool.shutdown(1.0)
