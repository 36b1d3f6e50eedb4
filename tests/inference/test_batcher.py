from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import architectures
from inference.batcher import BatchConfig, Batcher, BatchObserver, Priority
from inference.errors import BatchFailed, DeadlineExceeded, QueueFull, RequestTooLarge, ShuttingDown
from inference.runner import Runner

from .vtime import VirtualTimeLoop


class ScriptedRunner:
    """Doubles its input; records every batch; can be held at a gate or made to fail."""

    def __init__(self, compute_s: float = 0.0, fail_if: Callable[[np.ndarray], bool] | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.compute_s = compute_s
        self.fail_if = fail_if

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x.copy())
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.compute_s:
            await asyncio.sleep(self.compute_s)
        if self.fail_if is not None and self.fail_if(x):
            raise RuntimeError("CUDA out of memory (simulated)")
        return {"y": x * 2}

    @property
    def seen(self) -> set[float]:
        return {float(v) for b in self.batches for v in b[:, 0]}


def rows(*values: float, width: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.repeat(np.array(values, dtype=np.float64)[:, None], width, axis=1)}


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.batches: list[tuple[int, int, float]] = []
        self.rejections: list[str] = []

    def queue_depth(self, rows: int) -> None:
        self.depths.append(rows)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, rows: int, requests: int, compute_seconds: float) -> None:
        self.batches.append((rows, requests, compute_seconds))

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)


async def started(runner: object, **config: Any) -> Batcher:
    batcher = Batcher(runner, BatchConfig(**config))  # type: ignore[arg-type]
    await batcher.start()
    return batcher


async def started_virtual(runner: object, **config: Any) -> Batcher:
    """A started batcher on the running loop's clock: with `run_virtual`, timing assertions hold exactly
    however loaded the machine is."""
    batcher = Batcher(runner, BatchConfig(**config), clock=asyncio.get_running_loop().time)  # type: ignore[arg-type]
    await batcher.start()
    return batcher


def run_virtual(main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


async def until(predicate: Callable[[], bool]) -> None:
    # Polls internal state that has no event to wait on; bounded so a broken test fails, not hangs.
    async with asyncio.timeout(2.0):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


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


# -- bounded queue ----------------------------------------------------------------------------------


async def test_queue_is_bounded_and_retry_after_follows_the_drain_rate() -> None:
    runner = ScriptedRunner(compute_s=0.02)
    observer = Recorder()
    batcher = Batcher(runner, BatchConfig(max_batch_size=4, max_delay_ms=0, max_queue=10), observer)  # type: ignore[arg-type]
    await batcher.start()
    with pytest.raises(RequestTooLarge):
        await batcher.submit(rows(*range(11)))
    # Before any batch completed there is no rate: a fixed, modest hint.
    runner.hold()
    blocker = asyncio.create_task(batcher.submit(rows(0.0)))
    await until(lambda: bool(runner.batches))
    filler = [asyncio.create_task(batcher.submit(rows(1.0, 1.0))) for _ in range(5)]
    await asyncio.sleep(0)
    assert batcher.queued_rows == 10
    with pytest.raises(QueueFull) as first_refusal:
        await batcher.submit(rows(9.0))
    assert first_refusal.value.retry_after_seconds == 1.0
    runner.release()
    await asyncio.gather(blocker, *filler)
    # Rate is now measured: at most 4 rows per ~20 ms pass, so below 200 rows/s (partial batches and
    # the held first pass pull the average down, which only makes the hint conservative).
    assert batcher.drain_rate is not None and 20 < batcher.drain_rate < 210
    runner.hold()
    blocker = asyncio.create_task(batcher.submit(rows(0.0)))
    await until(lambda: runner.gate is not None and len(runner.batches) == 5)
    filler = [asyncio.create_task(batcher.submit(rows(1.0, 1.0))) for _ in range(5)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refusal:
        await batcher.submit(rows(*range(6)))
    expected = 6 / batcher.drain_rate  # 6 rows must drain before 6 more fit
    assert refusal.value.retry_after_seconds == pytest.approx(expected)
    assert refusal.value.kind == "overloaded"
    assert max(observer.depths) == 10
    assert observer.rejections.count("queue_full") == 2 and "too_large" in observer.rejections
    runner.release()
    await asyncio.gather(blocker, *filler)
    await batcher.drain(1.0)


# -- deadlines and cancellation ---------------------------------------------------------------------


def test_a_queued_request_past_its_deadline_fails_and_is_never_computed() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = ScriptedRunner()
        runner.hold()
        batcher = await started_virtual(runner, max_delay_ms=0)
        blocker = asyncio.create_task(batcher.submit(rows(1.0)))
        await until(lambda: bool(runner.batches))
        t0 = loop.time()
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(666.0), deadline=loop.time() + 0.05)
        # Woken at its deadline, not when the runner frees up (it never does here).
        assert loop.time() - t0 == pytest.approx(0.05, abs=1e-6)
        assert batcher.queued_rows == 0
        runner.release()
        await blocker
        await batcher.submit(rows(2.0))
        assert 666.0 not in runner.seen
        await batcher.drain(1.0)

    run_virtual(main)


async def test_default_timeout_applies_and_past_deadlines_are_refused() -> None:
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_delay_ms=0, timeout_ms=50)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(1.0))
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(2.0), deadline=time.monotonic() - 1)
    runner.release()
    await batcher.drain(1.0)


async def test_a_cancelled_caller_has_its_rows_removed_before_compute() -> None:
    runner = ScriptedRunner()
    runner.hold()
    observer = Recorder()
    batcher = Batcher(runner, BatchConfig(max_delay_ms=0), observer)  # type: ignore[arg-type]
    await batcher.start()
    blocker = asyncio.create_task(batcher.submit(rows(1.0)))
    await until(lambda: bool(runner.batches))
    gone = asyncio.create_task(batcher.submit(rows(666.0, 667.0)))
    stays = asyncio.create_task(batcher.submit(rows(3.0)))
    await asyncio.sleep(0)
    assert batcher.queued_rows == 3
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.queued_rows == 1
    runner.release()
    await asyncio.gather(blocker, stays)
    assert runner.seen == {1.0, 3.0}
    assert observer.rejections == ["cancelled"]
    await batcher.drain(1.0)


async def test_cancelling_part_of_a_split_request_withdraws_its_remainder() -> None:
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_batch_size=2, max_delay_ms=0)
    big = asyncio.create_task(batcher.submit(rows(10.0, 11.0, 12.0, 13.0, 14.0)))
    await until(lambda: bool(runner.batches))
    assert batcher.queued_rows == 3
    big.cancel()
    await asyncio.sleep(0)
    assert batcher.queued_rows == 0
    runner.release()
    await batcher.submit(rows(1.0))
    assert runner.seen == {10.0, 11.0, 1.0}
    await batcher.drain(1.0)


# -- failures and shutdown --------------------------------------------------------------------------


async def test_a_failing_forward_pass_fails_only_its_batch() -> None:
    runner = ScriptedRunner(fail_if=lambda x: bool((x == 13.0).any()))
    observer = Recorder()
    batcher = Batcher(runner, BatchConfig(max_batch_size=2, max_delay_ms=0), observer)  # type: ignore[arg-type]
    await batcher.start()
    runner.hold()
    blocker = asyncio.create_task(batcher.submit(rows(0.0)))
    await until(lambda: bool(runner.batches))
    doomed = [asyncio.create_task(batcher.submit(rows(v))) for v in (12.0, 13.0)]
    fine = asyncio.create_task(batcher.submit(rows(14.0)))
    await asyncio.sleep(0)
    runner.release()
    outcomes = await asyncio.gather(blocker, *doomed, fine, return_exceptions=True)
    assert isinstance(outcomes[1], BatchFailed) and isinstance(outcomes[2], BatchFailed)
    assert "CUDA out of memory" in outcomes[1].message
    assert float(outcomes[3]["y"][0, 0]) == 28.0  # type: ignore[index]
    assert (await batcher.submit(rows(5.0)))["y"][0, 0] == 10.0
    assert observer.rejections == ["batch_failed", "batch_failed"]
    await batcher.drain(1.0)


async def test_a_failure_in_one_part_of_a_split_request_fails_it_whole() -> None:
    runner = ScriptedRunner(fail_if=lambda x: bool((x == 3.0).any()))
    batcher = await started(runner, max_batch_size=2, max_delay_ms=0)
    with pytest.raises(BatchFailed):
        await batcher.submit(rows(1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert batcher.queued_rows == 0
    assert runner.seen == {1.0, 2.0, 3.0, 4.0}  # the rest was withdrawn, not computed
    await batcher.drain(1.0)


async def test_drain_finishes_queued_work_and_refuses_new_work() -> None:
    runner = ScriptedRunner(compute_s=0.01)
    batcher = await started(runner, max_batch_size=2, max_delay_ms=1000)
    tasks = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(5)]
    await asyncio.sleep(0)
    draining = asyncio.create_task(batcher.drain(2.0))
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        await batcher.submit(rows(9.0))
    assert await draining is True
    results = await asyncio.gather(*tasks)
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]


async def test_drain_timeout_fails_what_is_left() -> None:
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_batch_size=1, max_delay_ms=0)
    tasks = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(3)]
    await until(lambda: bool(runner.batches))
    assert await batcher.drain(0.05) is False
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, ShuttingDown) for o in outcomes)
    assert runner.seen == {0.0}
    assert batcher.queued_rows == 0


def test_observer_sees_queue_waits_and_batches() -> None:
    async def main() -> None:
        runner = ScriptedRunner()
        observer = Recorder()
        config = BatchConfig(max_batch_size=4, max_delay_ms=10, dispatch_policy="fixed")
        batcher = Batcher(runner, config, observer, clock=asyncio.get_running_loop().time)  # type: ignore[arg-type]
        await batcher.start()
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(3)))
        assert [(r, n) for r, n, _ in observer.batches] == [(3, 3)]
        assert observer.waits == pytest.approx([0.010] * 3, abs=1e-6)  # each waited the window for company
        assert observer.depths[-1] == 0 and max(observer.depths) == 3
        await batcher.drain(1.0)

    run_virtual(main)


async def test_a_broken_observer_does_not_break_serving() -> None:
    class Broken(BatchObserver):
        def queue_depth(self, rows: int) -> None:
            raise ValueError("metrics backend down")

    batcher = Batcher(ScriptedRunner(), BatchConfig(max_delay_ms=0), Broken())  # type: ignore[arg-type]
    await batcher.start()
    assert (await batcher.submit(rows(2.0)))["y"][0, 0] == 4.0
    await batcher.drain(1.0)


async def test_an_abandoned_request_at_the_head_is_skipped_not_computed() -> None:
    # A timeout or cancel cancels the request's future at once, but the waiter's cleanup runs only
    # when its task is next scheduled; a batch taken in between must skip the request, not stall.
    runner = ScriptedRunner()
    runner.hold()
    batcher = await started(runner, max_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit(rows(1.0)))
    await until(lambda: bool(runner.batches))
    waiter = asyncio.create_task(batcher.submit(rows(666.0)))
    survivor = asyncio.create_task(batcher.submit(rows(2.0)))
    await asyncio.sleep(0)
    group = next(iter(batcher._groups.values()))
    abandoned = group.top(Priority.NORMAL)
    assert abandoned is not None
    abandoned.future.cancel()
    batch = batcher._take(group, time.monotonic())
    assert [s.request.inputs["x"][0, 0] for s in batch] == [2.0]
    assert batcher.queued_rows == 0
    with pytest.raises(asyncio.CancelledError):
        await waiter
    batch[0].request.future.set_result({"y": np.array([[4.0]])})
    await survivor
    runner.release()
    await blocker
    await batcher.drain(1.0)


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


async def test_abandoning_the_last_queued_request_keeps_the_batcher_alive():
    """The head of a group abandoned while a batch computes must not kill the dispatcher."""
    import asyncio

    import numpy as np

    from inference.batcher import BatchConfig, Batcher

    class GatedRunner:
        def __init__(self) -> None:
            self.gate = asyncio.Event()

        async def forward(self, inputs):
            await self.gate.wait()
            self.gate.clear()
            return {"y": inputs["x"] * 2}

    runner = GatedRunner()
    batcher = Batcher(runner, BatchConfig(max_batch_size=4, max_delay_ms=0))
    await batcher.start()
    x = {"x": np.ones((1, 3), dtype=np.float32)}
    a = asyncio.create_task(batcher.submit(x))
    await asyncio.sleep(0.01)
    b = asyncio.create_task(batcher.submit(x))
    await asyncio.sleep(0.01)
    runner.gate.set()
    b.cancel()
    await asyncio.sleep(0.05)
    assert (await a)["y"].tolist() == [[2.0, 2.0, 2.0]]
    c = asyncio.create_task(batcher.submit(x))
    await asyncio.sleep(0.01)
    runner.gate.set()
    assert (await asyncio.wait_for(c, 5))["y"].tolist() == [[2.0, 2.0, 2.0]]
    await batcher.drain(1)
