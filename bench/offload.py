"""Where a request's JSON is parsed and converted: on the event loop or on a worker thread.

    .venv/bin/python bench/offload.py            # prints a markdown table (bench/OFFLOAD.md has a run)

Measures, per body size, what `app.serving.calls` and the fast path do with a REST predict body:
parse it (`inference.jsonio.loads`, with its depth check) and convert it (records through a fitted
`FeaturePipeline`, or a tensor through numpy), on the loop, and the cost of `asyncio.to_thread` (the
hop taken past `OFFLOAD_BYTES`). The stall columns are the longest gap a 1 ms ticker on the same loop
saw while one such request was converted (the median of five requests), on the loop and on a thread;
on a thread the loop still waits for the GIL, which the converting thread gives up every 5 ms
(`sys.getswitchinterval()`). Also the depth check's cost on a one-row body: orjson alone against `jsonio.loads`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import jsonio
from tabular.features import FeaturePipeline

CITIES = ["Oslo", "Bergen", "Paris", "Rome", "Lima"]
PIPELINE = FeaturePipeline.fit(
    {"age": [20.0, 35.0, 50.0], "income": [1.0, 2.0, 3.0], "city": CITIES[:3], "member": [True, False, True]},
    {"age": "numeric", "income": "numeric", "city": "categorical", "member": "boolean"},
    top_k=20,  # the one-hot encoding this bench has always measured (3 cities seen once each)
)


def records_body(rows: int) -> bytes:
    rng = random.Random(0)
    return orjson.dumps({"inputs": [{"age": rng.randint(18, 90), "income": rng.random() * 1e5,
                                     "city": rng.choice(CITIES), "member": rng.random() < 0.5}
                                    for _ in range(rows)]})


def tensor_body(rows: int, features: int = 256) -> bytes:
    rng = random.Random(0)
    return orjson.dumps({"inputs": [[round(rng.gauss(0, 1), 5) for _ in range(features)] for _ in range(rows)]})


def best(fn: Callable[[], Any], *, budget: float = 0.5) -> float:
    """Seconds per call: the best of several timed batches."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    batch = max(1, calls)
    times: list[float] = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return min(times)


def convert(body: bytes, kind: str) -> Any:
    inputs = jsonio.loads(body)["inputs"]
    if kind == "records":
        return PIPELINE.transform_records(inputs)
    return np.array(inputs)


async def stall(work: Callable[[], Any], *, off_loop: bool) -> float:
    """The longest gap between ticks of a 1 ms ticker while ``work`` runs once."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    if off_loop:
        await asyncio.to_thread(work)
    else:
        work()
    await asyncio.sleep(0.005)
    done.set()
    await task
    return max(gaps)


async def hop() -> float:
    loop_calls = 200
    t0 = time.perf_counter()
    for _ in range(loop_calls):
        await asyncio.to_thread(int)
    return (time.perf_counter() - t0) / loop_calls


async def main() -> None:
    hop_s = min([await hop() for _ in range(5)])
    print(f"asyncio.to_thread round trip: {hop_s * 1e6:.0f} µs\n")
    one = tensor_body(1)
    orjson_only = best(lambda: orjson.loads(one))
    checked = best(lambda: jsonio.loads(one))
    bound = best(lambda: jsonio._brackets(one))
    print(f"one 256-feature row ({len(one)} bytes): orjson.loads {orjson_only * 1e6:.1f} µs, "
          f"jsonio.loads (depth checked) {checked * 1e6:.1f} µs, of which the bracket count "
          f"{bound * 1e6:.2f} µs\n")
    print("| body | bytes | parse + convert | loop stall, converted on the loop | loop stall, on a thread |")
    print("|---|---|---|---|---|")
    cases = [("tensor 1 row", tensor_body(1), "tensor"), ("tensor 64 rows", tensor_body(64), "tensor"),
             ("records 50", records_body(50), "records"), ("records 200", records_body(200), "records"),
             ("records 800", records_body(800), "records"), ("records 5,000", records_body(5_000), "records"),
             ("records 90,000", records_body(90_000), "records")]
    for label, body, kind in cases:
        work = functools.partial(convert, body, kind)
        cost = best(work, budget=0.3)
        on_loop = statistics.median([await stall(work, off_loop=False) for _ in range(5)])
        threaded = statistics.median([await stall(work, off_loop=True) for _ in range(5)])
        print(f"| {label} | {len(body):,} | {cost * 1e3:.3f} ms | {on_loop * 1e3:.1f} ms | {threaded * 1e3:.1f} ms |")
    print(json.dumps({"hop_us": round(hop_s * 1e6, 1)}))


if __name__ == "__main__":
    asyncio.run(main())
