"""The batcher's limits: a bounded queue, deadlines, cancellation, failures, drain and its observer."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from inference.batcher import BatchConfig, Batcher, BatchObserver, Priority
from inference.errors import BatchFailed, DeadlineExceeded, QueueFull, RequestTooLarge, ShuttingDown

from .batching import Recorder, ScriptedRunner, rows, run_virtual, started, started_virtual, until

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


async def test_abandoning_the_last_queued_request_keeps_the_batcher_alive():
    """The head of a group abandoned while a batch computes must not kill the dispatcher."""
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
