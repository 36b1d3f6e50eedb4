"""Raw forward-pass throughput: the ceiling for anything Torchwire serves in one process.

Two fixed FP32 models built with `torch.manual_seed(0)`:

- light: mlp 64 -> 512 -> 512 -> 512 -> 10
- heavy: mlp 256 -> 2048 -> 2048 -> 2048 -> 10

Each runs at batch 1, 8, 32 and 64 with ONE torch intra-op thread, under `torch.inference_mode()`,
in a tight loop with no serving layer at all. Serving numbers (HTTP, batching) should be read
against these.

    .venv/bin/python bench/raw_throughput.py [--seconds 2] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

try:
    from inference import architectures
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from inference import architectures

MODELS: dict[str, dict[str, Any]] = {
    "light": {"in_features": 64, "hidden": [512, 512, 512], "out_features": 10},
    "heavy": {"in_features": 256, "hidden": [2048, 2048, 2048], "out_features": 10},
}
BATCH_SIZES = (1, 8, 32, 64)


def measure(module: torch.nn.Module, in_features: int, batch: int, seconds: float, device: torch.device) -> dict:
    x = torch.randn(batch, in_features, device=device)
    timings: list[float] = []
    with torch.inference_mode():
        for _ in range(20):
            module(x)
        _sync(device)
        end = time.perf_counter() + seconds
        while True:
            start = time.perf_counter()
            module(x)
            _sync(device)
            stop = time.perf_counter()
            timings.append(stop - start)
            if stop >= end:
                break
    total = sum(timings)
    timings.sort()
    return {
        "batch": batch,
        "passes": len(timings),
        "rows_per_s": batch * len(timings) / total,
        "passes_per_s": len(timings) / total,
        "latency_ms_mean": 1000 * total / len(timings),
        "latency_ms_p50": 1000 * statistics.median(timings),
        "latency_ms_p99": 1000 * timings[min(len(timings) - 1, int(len(timings) * 0.99))],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per model and batch size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    device = torch.device(args.device)
    results = []
    print(f"torch {torch.__version__}, 1 thread, device {device}, {platform.machine()} x{os.cpu_count()}")
    print(f"{'model':<6} {'batch':>5} {'rows/s':>12} {'passes/s':>10} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for name, config in MODELS.items():
        torch.manual_seed(0)
        module = architectures.build("mlp", config).to(device).eval()
        params = sum(p.numel() for p in module.parameters())
        for batch in BATCH_SIZES:
            row = {
                "model": name,
                "parameters": params,
                **measure(module, config["in_features"], batch, args.seconds, device),
            }
            results.append(row)
            print(
                f"{name:<6} {batch:>5} {row['rows_per_s']:>12,.0f} {row['passes_per_s']:>10,.0f} "
                f"{row['latency_ms_mean']:>9.3f} {row['latency_ms_p50']:>9.3f} {row['latency_ms_p99']:>9.3f}"
            )
    if args.json:
        report = {
            "benchmark": "raw_throughput",
            "torch": torch.__version__,
            "torch_threads": 1,
            "device": str(device),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "seconds_per_case": args.seconds,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
