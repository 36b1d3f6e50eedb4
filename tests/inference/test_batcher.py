"""The batcher computes each request's own rows, groups by shape, splits and forms batches in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import architectures
from inference.runner import Runner

from .batching import ScriptedRunner, rows, run_virtual, started, started_virtual, until

# -- every request gets exactly its own rows ------------------------------------------------------

MLP_CONFIG = {"in_features": 6, "hidden": [16], "out_features": 3, "activation": "tanh", "dtype": "float64"}


@pytest.fixture(scope="module")
async def mlp_runner() -> AsyncIterator[tuple[torch.nn.Module, Runner]]:
    torch.manual_seed(0)
    module = architectures.build("mlp", MLP_CONFIG).eval()
    signature = architectures.default_signature("mlp", MLP_CONFIG)
    assert signature is not None
    runner = Runner(module, signature, "cpu")
    yield module, runner
    runner.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=12),
    delays=st.lists(st.sampled_from([0.0, 0.0, 0.0005, 0.002]), min_size=12, max_size=12),
    max_batch_size=st.integers(min_value=1, max_value=9),
    max_delay_ms=st.sampled_from([0.0, 1.0, 3.0]),
)
async def test_every_request_gets_exactly_its_own_rows(
    mlp_runner: tuple[torch.nn.Module, Runner],
    sizes: list[int],
    delays: list[float],
    max_batch_size: int,
    max_delay_ms: float,
) -> None:
    module, runner = mlp_runner
    batcher = await started(runner, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms)
    generator = np.random.default_rng(len(sizes) * 100 + max_batch_size)
    requests = [generator.standard_normal((n, 6)) for n in sizes]

    async def call(i: int) -> dict[str, np.ndarray]:
        await asyncio.sleep(delays[i])
        return await batcher.submit({"input": requests[i]})

    results = await asyncio.gather(*(call(i) for i in range(len(requests))))
    assert await batcher.drain(1.0)
    for x, result in zip(requests, results, strict=True):
        with torch.inference_mode():
            alone = module(torch.from_numpy(x)).numpy()
        assert result["output"].shape == alone.shape
        np.testing.assert_allclose(result["output"], alone, rtol=1e-10, atol=1e-12)


# -- splitting and grouping ---------------------------------------------------------------------------


async def test_request_larger_than_max_batch_is_split_and_reassembled() -> None:
    runner = ScriptedRunner()
    batcher = await started(runner, max_batch_size=4, max_delay_ms=0)
    values = [float(v) for v in range(10)]
    result = await batcher.submit(rows(*values))
    assert [len(b) for b in runner.batches] == [4, 4, 2]
    np.testing.assert_array_equal(result["y"][:, 0], np.array(values) * 2)
    await batcher.drain(1.0)


async def test_split_fills_batches_shared_with_other_requests() -> None:
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_batch_size=4, max_delay_ms=0)
    first = asyncio.create_task(batcher.submit(rows(100.0)))
    await until(lambda: bool(runner.batches))
    a = asyncio.create_task(batcher.submit(rows(1.0, 2.0, 3.0)))
    b = asyncio.create_task(batcher.submit(rows(4.0, 5.0, 6.0)))
    await asyncio.sleep(0)
    runner.release()
    results = await asyncio.gather(first, a, b)
    assert [list(x[:, 0]) for x in runner.batches] == [[100.0], [1.0, 2.0, 3.0, 4.0], [5.0, 6.0]]
    assert list(results[2]["y"][:, 0]) == [8.0, 10.0, 12.0]
    await batcher.drain(1.0)


async def test_rows_are_only_stacked_with_rows_of_the_same_shape() -> None:
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_batch_size=8, max_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit(rows(0.0)))
    await until(lambda: bool(runner.batches))
    tasks = [asyncio.create_task(batcher.submit(rows(float(i), width=3 if i % 2 else 5))) for i in range(1, 7)]
    await asyncio.sleep(0)
    runner.release()
    results = await asyncio.gather(blocker, *tasks)
    # One batch per width: the blocker, then widths in order of their oldest request.
    assert [b.shape for b in runner.batches] == [(1, 1), (3, 3), (3, 5)]
    for i, result in enumerate(results[1:], start=1):
        assert result["y"].shape == (1, 3 if i % 2 else 5)
        assert np.all(result["y"] == 2 * i)
    await batcher.drain(1.0)


async def test_dtypes_are_grouped_too() -> None:
    runner = ScriptedRunner()
    batcher = await started(runner, max_batch_size=8, max_delay_ms=20)
    a = batcher.submit({"x": np.ones((1, 2), dtype=np.float32)})
    b = batcher.submit({"x": np.ones((1, 2), dtype=np.float64)})
    ra, rb = await asyncio.gather(a, b)
    assert ra["y"].dtype == np.float32 and rb["y"].dtype == np.float64
    assert len(runner.batches) == 2
    await batcher.drain(1.0)


# -- latency and batch formation ---------------------------------------------------------------------


def test_fixed_policy_at_concurrency_one_adds_at_most_max_delay() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = ScriptedRunner()
        batcher = await started_virtual(runner, max_batch_size=32, max_delay_ms=30, dispatch_policy="fixed")
        latencies = []
        for i in range(5):
            t0 = loop.time()
            await batcher.submit(rows(float(i)))
            latencies.append(loop.time() - t0)
        # Documented (Triton-style) behaviour: a lone request waits the full window for company, no more.
        assert latencies == pytest.approx([0.030] * 5, abs=1e-6)
        assert [len(b) for b in runner.batches] == [1] * 5
        await batcher.drain(1.0)

    run_virtual(main)


def test_zero_delay_dispatches_immediately() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = ScriptedRunner()
        batcher = await started_virtual(runner, max_delay_ms=0)
        t0 = loop.time()
        for i in range(20):
            await batcher.submit(rows(float(i)))
        assert loop.time() - t0 == 0.0, "no request waited for a window"
        assert len(runner.batches) == 20
        await batcher.drain(1.0)

    run_virtual(main)


async def test_a_full_batch_closes_without_waiting_for_the_delay() -> None:
    runner = ScriptedRunner()
    batcher = await started(runner, max_batch_size=8, max_delay_ms=10_000)
    t0 = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(rows(float(i), float(i))) for i in range(4)))
    assert time.monotonic() - t0 < 1.0
    assert [len(b) for b in runner.batches] == [8]
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    await batcher.drain(1.0)


def test_under_load_the_next_batch_forms_while_one_computes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = ScriptedRunner()
        runner.hold()
        batcher = await started_virtual(runner, max_batch_size=32, max_delay_ms=20, dispatch_policy="fixed")
        first = asyncio.create_task(batcher.submit(rows(0.0)))
        await until(lambda: bool(runner.batches))
        queued = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(1, 41)]
        await asyncio.sleep(0.03)  # longer than max_delay: the queue has waited long enough
        assert batcher.queued_rows == 40 and len(runner.batches) == 1  # one batch in flight at a time
        t0 = loop.time()
        runner.release()
        await asyncio.gather(first, *queued)
        assert [len(b) for b in runner.batches] == [1, 32, 8]
        assert loop.time() - t0 == 0.0  # no extra window after the compute: batches were already due
        await batcher.drain(1.0)

    run_virtual(main)


async def test_images_of_different_sizes_through_a_real_cnn() -> None:
    config = {"in_channels": 2, "channels": [4], "out_features": 3, "dtype": "float64"}
    torch.manual_seed(0)
    module = architectures.build("cnn", config).eval()
    signature = architectures.default_signature("cnn", config)
    assert signature is not None and signature.inputs[0].shape == (-1, 2, -1, -1)
    runner = Runner(module, signature, "cpu")
    batcher = await started(runner, max_batch_size=4, max_delay_ms=2)
    generator = np.random.default_rng(1)
    images = [generator.standard_normal((1 + i % 2, 2, 5 + i % 3, 7)) for i in range(9)]
    results = await asyncio.gather(*(batcher.submit({"input": x}) for x in images))
    await batcher.drain(1.0)
    runner.close()
    for x, result in zip(images, results, strict=True):
        with torch.inference_mode():
            alone = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(result["output"], alone, rtol=1e-10, atol=1e-12)
