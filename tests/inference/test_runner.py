from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from inference import architectures
from inference import runner as runner_module
from inference.errors import DeviceError
from inference.runner import Runner, resolve_device
from inference.signature import Signature


def signature(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> Signature:
    return Signature.from_dict(
        {
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs],
        }
    )


SIG_1_1 = signature([("x", "FP32", [-1, 2])], [("y", "FP32", [-1, 2])])


class Probe(nn.Module):
    """Records where and how it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(
            {
                "thread": threading.current_thread().name,
                "torch_threads": torch.get_num_threads(),
                "inference_mode": torch.is_inference_mode_enabled(),
                "dtype": x.dtype,
            }
        )
        return x * 2


def test_resolve_device_on_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device(spec)
    with pytest.raises(DeviceError, match="unsupported device type 'mps'"):
        resolve_device("mps")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu please")


def test_resolve_device_prefers_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="only 2 CUDA"):
        resolve_device("cuda:2")


class FakeStream:
    registry: list[FakeStream] = []

    def __init__(self, device: torch.device) -> None:
        self.device, self.thread, self.synced = device, threading.current_thread().name, 0
        self.registry.append(self)

    def synchronize(self) -> None:
        self.synced += 1


class FakeCuda:
    """CUDA faked on a CPU machine: streams that record where they were made and used, page-locked
    allocations that record their shapes, and copies to a cuda device that stay on the CPU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.streams: list[FakeStream] = []
        self.current: list[FakeStream] = []
        self.pinned: list[tuple[int, ...]] = []
        self.copies: list[tuple[str, bool]] = []  # (device type, non_blocking) of each copy to the device
        fake = self

        @contextlib.contextmanager
        def stream(s: FakeStream) -> Iterator[None]:
            fake.current.append(s)
            try:
                yield
            finally:
                fake.current.pop()

        def pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            fake.pinned.append(shape)
            return torch.empty(shape, dtype=dtype)

        real_to = torch.Tensor.to

        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, torch.device) and target.type == "cuda":
                assert fake.current, "a copy to the device outside the runner's stream"
                fake.copies.append((target.type, bool(kwargs.get("non_blocking"))))
                return tensor.clone()
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(FakeStream, "registry", self.streams)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
        monkeypatch.setattr(torch.cuda, "stream", stream)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(runner_module, "_pinned_empty", pinned_empty)


async def test_on_cuda_a_runner_has_its_own_stream_and_stages_batches_in_pinned_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cuda = FakeCuda(monkeypatch)
    probe = Probe()
    runner = Runner(probe, SIG_1_1, resolve_device("cuda"))
    other = Runner(Probe(), SIG_1_1, "cuda:0")
    for rows in (3, 1, 4, 5):
        out = await runner.forward({"x": np.full((rows, 2), rows, dtype=np.float32)})
        np.testing.assert_array_equal(out["y"], np.full((rows, 2), 2 * rows, dtype=np.float32))
    await other.forward({"x": np.ones((2, 2), dtype=np.float32)})
    runner.close()
    other.close()
    # One stream per runner, made on the runner's worker thread and synchronised after every pass.
    assert len(cuda.streams) == 2
    mine = cuda.streams[0]
    assert mine.thread.startswith("torchwire-runner") and mine.device == torch.device("cuda")
    assert mine.synced == 4 and cuda.streams[1].synced == 1
    # Inputs go through a page-locked buffer that is reused, and grown only when a batch outgrows it.
    assert cuda.pinned == [(4, 2), (8, 2), (2, 2)]
    assert cuda.copies == [("cuda", True)] * 5
    assert all(c["thread"].startswith("torchwire-runner") for c in probe.calls)


async def test_on_cuda_a_new_row_shape_gets_its_own_pinned_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch)
    sig = signature([("x", "FP64", [-1, -1])], [("y", "FP64", [-1, -1])])
    runner = Runner(Probe(), sig, "cuda")
    for width in (3, 3, 5):
        out = await runner.forward({"x": np.ones((2, width))})
        assert out["y"].shape == (2, width) and out["y"].dtype == np.float64
    runner.close()
    assert cuda.pinned == [(2, 3), (2, 5)]


@pytest.mark.parametrize("threads", [1, 2])
async def test_forward_runs_on_its_own_thread_in_inference_mode(threads: int) -> None:
    probe = Probe()
    runner = Runner(probe, SIG_1_1, "cpu", num_threads=threads)
    out = await runner.forward({"x": np.ones((3, 2), dtype=np.float32)})
    await runner.forward({"x": torch.ones(1, 2)})
    runner.close()
    np.testing.assert_array_equal(out["y"], np.full((3, 2), 2, dtype=np.float32))
    names = {c["thread"] for c in probe.calls}
    assert len(names) == 1 and names.pop().startswith("torchwire-runner")
    assert all(c["inference_mode"] and c["torch_threads"] == threads for c in probe.calls)


async def test_a_slow_forward_does_not_block_the_event_loop() -> None:
    class Slow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.2)
            return x

    runner = Runner(Slow(), SIG_1_1, "cpu")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await runner.forward({"x": np.zeros((1, 2), dtype=np.float32)})
    ticker.cancel()
    runner.close()
    assert ticks >= 10


class Multi(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Any:
        s, d = a + b, a - b
        if self.kind == "tuple":
            return s, d
        if self.kind == "dict":
            return {"diff": d, "sum": s}
        if self.kind == "dict-other-names":
            return {"first": s, "second": d}
        if self.kind == "one":
            return s
        if self.kind == "rows":
            return s[:1], d
        return "not a tensor"


SIG_2_2 = signature(
    [("a", "FP32", [-1, 2]), ("b", "FP32", [-1, 2])], [("sum", "FP64", [-1, 2]), ("diff", "FP32", [-1, 2])]
)


@pytest.mark.parametrize("kind", ["tuple", "dict", "dict-other-names"])
async def test_outputs_map_to_the_signature(kind: str) -> None:
    runner = Runner(Multi(kind), SIG_2_2, "cpu")
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.ones((2, 2), dtype=np.float32)
    out = await runner.forward({"b": b, "a": a})  # positional order comes from the signature
    runner.close()
    assert list(out) == ["sum", "diff"]
    assert out["sum"].dtype == np.float64  # converted to the declared type
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["diff"], a - b)


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("one", ValueError, "returned 1 outputs; the signature declares 2"),
        ("rows", ValueError, "has shape \\[1, 2\\] for 2 input rows"),
        ("str", TypeError, "expected a tensor, tuple or dict"),
    ],
)
async def test_outputs_that_disagree_with_the_signature_raise(kind: str, error: type, message: str) -> None:
    runner = Runner(Multi(kind), SIG_2_2, "cpu")
    with pytest.raises(error, match=message):
        await runner.forward({"a": np.ones((2, 2), dtype=np.float32), "b": np.ones((2, 2), dtype=np.float32)})
    runner.close()


async def test_wide_unsigned_inputs_are_widened_for_the_model() -> None:
    probe = Probe()
    sig = signature([("x", "UINT32", [-1, 2])], [("y", "INT64", [-1, 2])])
    runner = Runner(probe, sig, "cpu")
    out = await runner.forward({"x": np.full((1, 2), 2**32 - 1, dtype=np.uint32)})
    runner.close()
    assert probe.calls[0]["dtype"] == torch.int64
    assert out["y"].tolist() == [[2 * (2**32 - 1)] * 2]


async def test_memory_estimate_counts_parameters_and_buffers() -> None:
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    runner = Runner(module, SIG_1_1, "cpu")
    runner.close()
    # Linear 4*3+3, BatchNorm weight+bias 6, running mean+var 6 (float32), num_batches_tracked (int64).
    assert runner.memory_bytes == (15 + 6 + 6) * 4 + 8


async def test_load_warms_up_and_catches_a_wrong_signature(tmp_path: Path) -> None:
    config = {"in_features": 4, "hidden": [8], "out_features": 3}
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(architectures.build("mlp", config).state_dict(), path)
    good = architectures.default_signature("mlp", config)
    assert good is not None
    runner = await Runner.load(path, "safetensors", "mlp", config, good, device="auto")
    assert runner.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = await runner.forward({"input": np.zeros((5, 4), dtype=np.float32)})
    assert out["output"].shape == (5, 3)
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        await runner.forward({"input": np.zeros((5, 4), dtype=np.float32)})

    wrong = signature([("input", "FP32", [-1, 5])], [("output", "FP32", [-1, 3])])
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        await Runner.load(path, "safetensors", "mlp", config, wrong, device="cpu")
    wrong_out = signature([("input", "FP32", [-1, 4])], [("output", "FP32", [-1, 7])])
    with pytest.raises(ValueError, match="signature declares \\[-1, 7\\]"):
        await Runner.load(path, "safetensors", "mlp", config, wrong_out, device="cpu")


def test_worker_threads_must_be_positive() -> None:
    with pytest.raises(ValueError):
        runner_module.Runner(Probe(), SIG_1_1, "cpu", num_threads=0)
