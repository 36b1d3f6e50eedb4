"""One loaded module on its device, running forward passes on a dedicated thread.

Public API::

    resolve_device(spec: str) -> torch.device        # "auto" | "cpu" | "cuda" | "cuda:N"
    runner = await Runner.load(path, fmt, architecture, config, signature, device="auto", num_threads=1)
    runner = Runner(module, signature, device, num_threads=1); await runner.warm_up()
    outputs = await runner.forward({"input": array})  # dict[str, np.ndarray], in signature order
    runner.memory_bytes; runner.close()

Every touch of the module (load, warm-up, forward) happens on the runner's single worker thread,
so the event loop never blocks on torch and CUDA state (current device, streams) stays on one
thread. Forward passes are serialised: callers that want concurrency batch (see `batcher`).

CUDA: each runner has a stream of its own (created on its worker thread), so passes of different
models overlap on the device instead of queueing on the default stream, and stages every batch in
page-locked host buffers kept across passes (copied asynchronously; pageable memory would cost the
driver an extra staging copy and a synchronisation per input). The pass ends by synchronising its
stream before outputs are read. `tests/inference/test_runner.py` runs this path on a CPU by faking
CUDA's availability.

Threads: `num_threads` is applied with ``torch.set_num_threads`` on the worker thread. With the
OpenMP backend that bounds the parallel regions this thread starts, but torch also records it
process-wide, so all runners of one process should use the same value (the pool passes one
setting to all of them). The default of 1 suits a server running one process per core; raise
it for fewer, larger models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.datatypes import numpy_to_torch, torch_to_numpy
from inference.errors import DeviceError, InferenceError, SignatureError
from inference.formats import load_module
from inference.signature import Signature

__all__ = ["Runner", "dry_run", "resolve_device"]


def resolve_device(spec: str | torch.device) -> torch.device:
    """`auto` picks CUDA when available; an explicit CUDA device that is absent raises `DeviceError`."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"unsupported device type {device.type!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) exist")
    return device


class Runner:
    """A module bound to a device and a worker thread. Create and use it on one event loop."""

    def __init__(
        self, module: nn.Module, signature: Signature, device: torch.device | str, *, num_threads: int = 1
    ) -> None:
        self.signature = signature
        self.device = torch.device(device)
        self.num_threads = num_threads
        self._module: nn.Module | None = module
        self._cuda = _CudaStaging(self.device) if self.device.type == "cuda" else None
        self._executor = _worker(num_threads)
        self.memory_bytes = _memory_bytes(module)

    @classmethod
    async def load(
        cls,
        path: str | os.PathLike[str],
        fmt: str,
        architecture: str | None,
        config: Mapping[str, Any] | None,
        signature: Signature,
        *,
        device: str | torch.device = "auto",
        num_threads: int = 1,
        allow_code: bool = False,
    ) -> Runner:
        """Load an artifact off the event loop and warm it up; raises what `load_module` raises,
        or the warm-up's error when the module disagrees with `signature`."""
        resolved = resolve_device(device)
        module = await asyncio.to_thread(load_module, path, fmt, architecture, config, resolved, allow_code=allow_code)
        runner = cls(module, signature, resolved, num_threads=num_threads)
        try:
            await runner.warm_up()
        except BaseException:
            runner.close()
            raise
        return runner

    async def warm_up(self, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """One forward pass (default: one zero row from the signature) that also checks the outputs
        agree with the signature, so a mismatch fails at load time instead of on the first request."""
        await self.forward(inputs if inputs is not None else self.signature.example_inputs(rows=1))

    async def forward(self, inputs: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
        """Run the module on `inputs` (keyed by signature input name, same number of rows each).

        The module is called positionally in signature order. Its result maps to the signature's
        outputs: a tensor to the only output, a tuple/list in order, a dict by name (or in order
        if its keys are not the output names). Outputs come back on the host as the declared
        datatypes, each with as many rows as the inputs; otherwise this raises `ValueError` /
        `TypeError` (a model that disagrees with its signature).
        """
        if self._module is None:
            raise RuntimeError("runner is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._forward_sync, self._module, dict(inputs))

    def close(self) -> None:
        """Release the module; does not wait for a forward pass already running on the worker."""
        self._module = None
        if self.device.type == "cuda":
            # Queued behind any running pass, so it runs once the last reference to the weights is gone;
            # otherwise the caching allocator would keep holding their memory.
            self._executor.submit(torch.cuda.empty_cache)
        self._executor.shutdown(wait=False)

    def _forward_sync(self, module: nn.Module, inputs: dict[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        with cuda.on_stream() if cuda is not None else contextlib.nullcontext():
            tensors = []
            rows = None
            for spec in self.signature.inputs:
                value = inputs[spec.name]
                tensor = value if isinstance(value, torch.Tensor) else numpy_to_torch(value)
                rows = tensor.shape[0] if rows is None else rows
                if cuda is not None:
                    tensors.append(cuda.to_device(spec.name, tensor))
                else:
                    tensors.append(tensor.to(self.device, non_blocking=True))
            with torch.inference_mode():
                result = module(*tensors)
            named = self._map_outputs(result)
            if cuda is not None:
                named = {name: tensor.to("cpu", non_blocking=True) for name, tensor in named.items()}
                cuda.synchronize()
        outputs = {}
        for spec in self.signature.outputs:
            array = torch_to_numpy(named[spec.name], spec.datatype)
            if array.ndim != len(spec.shape) or array.shape[0] != rows:
                raise ValueError(
                    f"output {spec.name!r} has shape {list(array.shape)} for {rows} input rows; "
                    f"the signature declares {list(spec.shape)}"
                )
            for axis, want in enumerate(spec.shape[1:], start=1):
                if want != -1 and array.shape[axis] != want:
                    raise ValueError(
                        f"output {spec.name!r} has shape {list(array.shape)}; the signature declares {list(spec.shape)}"
                    )
            outputs[spec.name] = array
        return outputs

    def _map_outputs(self, result: object) -> dict[str, torch.Tensor]:
        names = self.signature.output_names
        if isinstance(result, torch.Tensor):
            values: list[object] = [result]
        elif isinstance(result, Mapping):
            if set(names) <= set(result):
                values = [result[n] for n in names]
            else:
                values = list(result.values())
        elif isinstance(result, tuple | list):
            values = list(result)
        else:
            raise TypeError(f"model returned {type(result).__name__}; expected a tensor, tuple or dict of tensors")
        if len(values) != len(names):
            raise ValueError(f"model returned {len(values)} outputs; the signature declares {len(names)}")
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"output {name!r} is a {type(value).__name__}, not a tensor")
        return dict(zip(names, values, strict=True))  # type: ignore[arg-type]


def dry_run(
    path: str | os.PathLike[str],
    fmt: str,
    architecture: str | None,
    config: Mapping[str, Any] | None,
    signature: Signature,
    *,
    max_elements: int,
    allow_code: bool = False,
) -> None:
    """The warm-up every serving process runs before it serves (`Runner.warm_up`: one zero row shaped by
    `signature`, outputs checked against it), on the CPU, so that an artifact and a signature that
    disagree are refused when published instead of failing every call.

    Blocking, on the calling thread: call it off the event loop, and bound its time there. The input is
    bounded before anything is allocated: one row of an input may hold at most `max_elements` elements
    (no request could send more). Raises `SignatureError` naming the disagreement, or what
    `load_module` raises for the artifact itself.
    """
    for spec in signature.inputs:
        elements = math.prod(1 if d == -1 else d for d in spec.shape[1:])
        if elements > max_elements:
            raise SignatureError(
                f"input {spec.name!r}: one row of shape {list(spec.shape)} holds {elements} elements, more than "
                f"the {max_elements} a request may send"
            )
    module = load_module(path, fmt, architecture, config, "cpu", allow_code=allow_code)
    runner = Runner(module, signature, "cpu")
    try:
        runner._forward_sync(module, dict(signature.example_inputs(rows=1)))
    except InferenceError:
        raise
    except Exception as exc:
        # The first line only: some torch errors go on with the C++ source location.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        raise SignatureError(
            f"the model cannot run its signature on one row of zeros: {reason}",
            details={"inputs": [s.to_dict() for s in signature.inputs],
                     "outputs": [s.to_dict() for s in signature.outputs]},
        ) from exc
    finally:
        runner.close()


def _pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


class _CudaStaging:
    """A runner's CUDA stream and its page-locked staging buffers. Used only on the runner's worker thread,
    one pass at a time: a buffer is reused by the next pass only after `synchronize` ended this one."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream: Any = None
        self.buffers: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(self.stream):
            yield

    def to_device(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Copies ``tensor`` into the pinned buffer for input ``name`` (grown to the next power of two rows
        when too small, replaced when the row shape or dtype changes), then to the device asynchronously."""
        rows = tensor.shape[0]
        buffer = self.buffers.get(name)
        fits = buffer is not None and buffer.shape[0] >= rows and buffer.shape[1:] == tensor.shape[1:]
        if buffer is None or not fits or buffer.dtype != tensor.dtype:
            capacity = 1 << max(0, rows - 1).bit_length()
            buffer = self.buffers[name] = _pinned_empty((capacity, *tensor.shape[1:]), tensor.dtype)
        host = buffer[:rows]
        host.copy_(tensor)
        return host.to(self.device, non_blocking=True)

    def synchronize(self) -> None:
        self.stream.synchronize()


def _worker(num_threads: int) -> concurrent.futures.ThreadPoolExecutor:
    if num_threads < 1:
        raise ValueError("num_threads must be >= 1")
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="torchwire-runner", initializer=torch.set_num_threads, initargs=(num_threads,)
    )


def _memory_bytes(module: nn.Module) -> int:
    """Parameters plus buffers: the part of the footprint that stays resident between requests."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
