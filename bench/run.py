"""The Torchwire benchmark (`make bench`): raw forward-pass throughput, then the service under load.

1. Raw: the two reference MLPs (bench/raw_throughput.py) at batch 1, 8, 32 and 64, one torch thread,
   on the core the server will get.
2. Service: one uvicorn process with production settings and one torch thread (bench/service.py),
   driven at concurrency 1, 16 and 64 over REST, V2 and the websocket, with batching on
   (``max_batch_size=64``, ``max_delay_ms=5``; the adaptive dispatch policy and, for comparison in the
   same run, the fixed one it replaced) and off (``max_batch_size=1``). Every request carries
   one row, so batching across callers is what is measured. REST and V2 are driven by wrk when it is
   installed (else an aiohttp client), the websocket by an asyncio client; the client's CPU is
   reported next to the server's so a saturated client shows.
3. The real users' path (bench/tabular_path.py): a tabular model trained by Torchwire, called over REST with
   raw records and with the same rows as tensors, at the same concurrencies.

On a machine with two or more cores the server is pinned to the first and the load generator (and this
process) to the others. Writes bench/results/latest.json and the generated part of bench/RESULTS.md
(between the markers; the analysis around them is kept).

    .venv/bin/python bench/run.py [--quick] [--duration S] [--models light,heavy] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import raw_throughput
import tabular_path as tabular
from accounting import Window, cell_numbers, py_spy_binary
from load import PROTOCOLS, Load, Phases, http_load, rest_body, run_async, v2_body, wrk_run, ws_load, ws_template
from report import finite, floors, git_state, machine_info, markdown, write_markdown, wrk_version
from service import Service, model_probe, model_replace, publish_model, start_service

from inference import architectures

BENCH = Path(__file__).resolve().parent
CONCURRENCY = (1, 16, 64)
BATCHED: dict[str, Any] = {"max_batch_size": 64, "max_delay_ms": 5.0, "dispatch_policy": "adaptive"}
# The policy before issue 15, same limits:
FIXED: dict[str, Any] = {"max_batch_size": 64, "max_delay_ms": 5.0, "dispatch_policy": "fixed"}
UNBATCHED: dict[str, Any] = {"max_batch_size": 1, "max_delay_ms": 5.0}
# Served names: the model itself (adaptive), "-fixed" (the old policy, same limits), "-b1" (no batching).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "adaptive": ("", BATCHED), "fixed": ("-fixed", FIXED), "off": ("-b1", UNBATCHED),
}
WS_PER_SOCKET = 16  # requests in flight per websocket; the server allows 64 (TORCHWIRE_WS_MAX_IN_FLIGHT)


# -- the benchmark -----------------------------------------------------------------------------------


def example_row(in_features: int) -> list[float]:
    generator = torch.Generator().manual_seed(1)
    return [round(float(x), 5) for x in torch.randn(in_features, generator=generator)]


def expected_outputs(config: dict[str, Any], row: list[float]) -> list[float]:
    torch.manual_seed(0)
    module = architectures.build("mlp", config).eval()
    with torch.inference_mode():
        return [float(x) for x in module(torch.tensor([row], dtype=torch.float32))[0]]


def verify(service: Service, name: str, config: dict[str, Any], row: list[float]) -> None:
    """One request per protocol, compared with the same model computed here: the bench must measure
    correct answers."""
    want = expected_outputs(config, row)
    headers = {"Authorization": f"Bearer {service.api_key}", "Content-Type": "application/json"}
    got: dict[str, list[float]] = {}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        response = client.post(f"/api/v1/models/{name}/predict", content=rest_body(row))
        got["rest"] = response.json()["outputs"][0]
        response = client.post(f"/v2/models/{name}/infer", content=v2_body(row))
        got["v2"] = response.json()["outputs"][0]["data"]

    async def ws() -> list[float]:
        import websockets

        async with websockets.connect(f"{service.ws_url}/ws/v1/infer",
                                      subprotocols=["bearer", service.api_key]) as conn:  # type: ignore[list-item]
            await conn.send(ws_template(name, row)("check"))
            answer = json.loads(await asyncio.wait_for(conn.recv(), 30))
        data: list[float] = answer["outputs"][0]["data"]
        return data

    got["ws"] = asyncio.run(ws())
    for protocol, values in got.items():
        if len(values) != len(want) or not all(
            math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(values, want, strict=True)
        ):
            raise RuntimeError(f"{name} over {protocol} answered {values[:4]}..., expected {want[:4]}...")


def measure_cell(service: Service, *, served: str, protocol: str, concurrency: int, row: list[float],
                 warmup: float, seconds: float, http_client: str, py_spy: str | None = None,
                 body: bytes | None = None, inputs: str = "tensors") -> dict[str, Any]:
    """One cell: a warm-up, then ``seconds`` measured, with the server's CPU and batch statistics over
    exactly the measured window (and a py-spy profile of it when ``py_spy`` is given)."""
    window = Window(service, served, py_spy=py_spy, seconds=seconds)
    auth = {"Authorization": f"Bearer {service.api_key}", "Content-Type": "application/json"}
    if protocol == "ws":
        phases = Phases(concurrency, warmup, seconds, window.start)
        load = run_async(ws_load(service.ws_url, service.api_key, ws_template(served, row), phases,
                                 per_socket=WS_PER_SOCKET))
    else:
        path = f"/api/v1/models/{served}/predict" if protocol == "rest" else f"/v2/models/{served}/infer"
        if body is None:
            body = rest_body(row) if protocol == "rest" else v2_body(row)
        load = http_cell(service.url + path, body, auth, window, concurrency, warmup, seconds, http_client)
    window.end()
    entry = service.models[served]
    cell = {
        "model": entry["model"],
        "served_as": served,
        "protocol": protocol,
        "batching": entry["serving"]["max_batch_size"] > 1,
        "policy": entry["serving"].get("dispatch_policy", "adaptive") if entry["serving"]["max_batch_size"] > 1
        else "off",
        "inputs": inputs,
        **entry["serving"],
        "concurrency": concurrency,
        **cell_numbers(load, window),
    }
    if window.profile is not None:
        cell["profile"] = window.profile
    return cell


def http_cell(url: str, body: bytes | None, headers: dict[str, str], window: Window, concurrency: int,
              warmup: float, seconds: float, http_client: str) -> Load:
    if http_client == "wrk":
        # Warm up with the asyncio client, which stops cleanly: wrk stops by dropping connections with
        # requests queued, and that can leave the model version broken (see run_grid).
        run_async(http_load(url, Phases(concurrency, warmup, 0.0, lambda: None), body=body, headers=headers))
        window.start()
        return wrk_run(url, concurrency=concurrency, seconds=max(1, round(seconds)), body=body, headers=headers)
    phases = Phases(concurrency, warmup, seconds, window.start)
    return run_async(http_load(url, phases, body=body, headers=headers))


def baseline(service: Service, *, warmup: float, seconds: float, http_client: str) -> dict[str, Any]:
    """GET /healthz at concurrency 16: an async view that returns a constant through the full middleware
    stack, no auth and no model. What any request costs the server before it does anything."""
    window = Window(service, "")
    load = http_cell(service.url + "/healthz", None, {}, window, 16, warmup, seconds, http_client)
    window.end()
    numbers = cell_numbers(load, window)
    for key in ("mean_batch", "runner_busy"):
        numbers.pop(key)
    return {"path": "/healthz", "concurrency": 16, **numbers}


def run_raw(models: list[str], seconds: float) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    results = []
    for name in models:
        config = raw_throughput.MODELS[name]
        torch.manual_seed(0)
        module = architectures.build("mlp", config).eval()
        for batch in raw_throughput.BATCH_SIZES:
            row = {"model": name, **raw_throughput.measure(module, config["in_features"], batch, seconds, device)}
            results.append(row)
            print(f"raw {name:<5} batch {batch:>2}: {row['rows_per_s']:>9,.0f} rows/s  "
                  f"{row['latency_ms_p50']:.3f} ms/pass")
    return results


# -- main --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    if not cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s per cell, short raw runs")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 10, --quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 2, --quick 1)")
    parser.add_argument("--raw-seconds", type=float, help="seconds per raw case (default 2, --quick 0.5)")
    parser.add_argument("--models", default="light,heavy", help="comma-separated: light, heavy")
    parser.add_argument("--policies", default="adaptive,fixed,off",
                        help="batching variants: adaptive, fixed (the policy before issue 15), off (batch size 1)")
    parser.add_argument("--no-tabular", action="store_true", help="skip the trained tabular model (records)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: rest, v2, ws")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="comma-separated")
    parser.add_argument("--http-client", choices=("auto", "wrk", "asyncio"), default="auto",
                        help="REST/V2 load generator (auto: wrk when installed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate cores")
    parser.add_argument("--profile", action="store_true",
                        help="after the grid, re-run the heavy c64 batched cells under py-spy (needs py-spy)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--markdown", default=str(BENCH / "RESULTS.md"), help="where the tables go ('-': nowhere)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.raw_seconds = args.raw_seconds or (0.5 if args.quick else 2.0)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for policy in args.policies:
        if policy not in VARIANTS:
            parser.error(f"unknown policy {policy!r}")
    for name in args.models:
        if name not in raw_throughput.MODELS:
            parser.error(f"unknown model {name!r}")
    for protocol in args.protocols:
        if protocol not in PROTOCOLS:
            parser.error(f"unknown protocol {protocol!r}")
    if args.http_client == "auto":
        args.http_client = "wrk" if shutil.which("wrk") else "asyncio"
    if args.http_client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk); or use --http-client asyncio")
    args.py_spy = py_spy_binary() if args.profile else None
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy on PATH or next to this Python (pip install py-spy)")
    return args


def report_cell(cell: dict[str, Any]) -> None:
    print(
        f"{cell['model']:<7} {cell['protocol']:<4} {cell['policy']:<8} {cell['inputs']:<7} c{cell['concurrency']:<3} "
        f"{cell['rps']:>7,.0f} req/s  p50 {cell['latency_ms']['p50']:7.2f}  "
        f"p99 {cell['latency_ms']['p99']:7.2f} ms  batch {cell['mean_batch']:4.1f}  "
        f"busy {100 * cell['runner_busy']:3.0f}%  "
        f"srv {cell['server_cpu']:.2f} ({cell['server_cpu_ms_per_request']:.2f} ms/req)  "
        f"cli {cell['client_cpu']:.2f}  err {cell['errors']}",
        flush=True,
    )
    if cell["error_sample"]:
        print(f"      first error: {cell['error_sample']}")


def run_grid(service: Service, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per model, protocol and concurrency, the policies back to back, so that the cells they are compared
    in are minutes apart at most."""
    cells: list[dict[str, Any]] = []
    for name in args.models:
        row = example_row(raw_throughput.MODELS[name]["in_features"])
        served_names = [name + VARIANTS[policy][0] for policy in args.policies]
        for protocol, concurrency, served in itertools.product(args.protocols, args.concurrency, served_names):
            cell = measure_cell(service, served=served, protocol=protocol, concurrency=concurrency, row=row,
                                warmup=args.warmup, seconds=args.duration, http_client=args.http_client)
            cells.append(cell)
            report_cell(cell)
            problem = model_probe(service, served)
            if problem is not None:
                # Seen when clients go away with requests queued (wrk stops that way): the version's
                # batcher dies and refuses everything after. Replace it so later cells measure a working one.
                cell["model_broken_after"] = problem
                print(f"      {served} is broken after this cell ({problem}); publishing a fresh copy")
                model_replace(service, served)
    return cells


def run_tabular(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    """bench/tabular_path.py: train ``tabular`` in the service, then REST with raw records and with the same row as a
    tensor, batched (adaptive), at each concurrency."""
    started = time.monotonic()
    summary = tabular.train(service.env, BENCH.parent, service.tmp)
    print(f"trained {tabular.NAME} in {time.monotonic() - started:.0f} s: {summary}")
    with httpx.Client(base_url=service.url, timeout=60, headers={"Authorization": f"Bearer {service.api_key}"}) as c:
        response = c.patch(f"/api/v1/models/{tabular.NAME}", json=BATCHED)
        if response.status_code != 200:
            raise RuntimeError(f"PATCH {tabular.NAME} -> {response.status_code}: {response.text[:300]}")
        records = c.post(f"/api/v1/models/{tabular.NAME}/predict", content=tabular.records_body(),
                         headers={"Content-Type": "application/json"})
    storage = Path(service.env["STORAGE_URL"].removeprefix("file://"))
    trained = tabular.Trained(service.tmp / "db.sqlite3", storage)
    service.models[tabular.NAME] = {"model": tabular.NAME, "config": trained.config, "serving": BATCHED,
                                    "artifact": b"", "version": 1}
    tensors = httpx.post(f"{service.url}/api/v1/models/{tabular.NAME}/predict", content=tabular.tensor_body(trained),
                         headers={"Authorization": f"Bearer {service.api_key}", "Content-Type": "application/json"},
                         timeout=60)
    if records.status_code != 200 or tensors.status_code != 200:
        raise RuntimeError(f"{tabular.NAME}: records -> {records.status_code} {records.text[:300]}; "
                           f"tensors -> {tensors.status_code} {tensors.text[:300]}")
    print(f"{tabular.NAME}: {tabular.example_record()} -> {records.json()['outputs'][0]}")
    with affinity({sorted(os.sched_getaffinity(0))[0]} if not args.no_pin else None):
        raw = trained.measure(args.raw_seconds)
    print(f"{tabular.NAME} alone: pipeline {raw['pipeline_us_per_record']:.1f} us/record, forward "
          f"{raw['rows_per_s_batch1']:,.0f} rows/s at batch 1, {raw['rows_per_s_batch64']:,.0f} at batch 64")
    cells = []
    for concurrency, (inputs, body) in itertools.product(
        args.concurrency, (("records", tabular.records_body()), ("tensors", tabular.tensor_body(trained)))
    ):
        cell = measure_cell(service, served=tabular.NAME, protocol="rest", concurrency=concurrency, row=[],
                            warmup=args.warmup, seconds=args.duration, http_client=args.http_client, body=body,
                            inputs=inputs)
        cells.append(cell)
        report_cell(cell)
        problem = model_probe(service, tabular.NAME)
        if problem is not None:
            cell["model_broken_after"] = problem
            print(f"      {tabular.NAME} is broken after this cell ({problem})")
    return {"model": tabular.NAME, "training": summary, "hyperparameters": tabular.HYPERPARAMETERS,
            "features": trained.pipeline.n_features, "config": trained.config, "raw": raw, "cells": cells}


def run_profiles(service: Service, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The floor cells again, under py-spy: kept apart from the grid because sampling costs the server."""
    profiles: list[dict[str, Any]] = []
    if "heavy" not in args.models:
        return profiles
    row = example_row(raw_throughput.MODELS["heavy"]["in_features"])
    for protocol in args.protocols:
        cell = measure_cell(service, served="heavy", protocol=protocol, concurrency=64, row=row, warmup=args.warmup,
                            seconds=args.duration, http_client=args.http_client, py_spy=args.py_spy)
        profiles.append(cell)
        print(f"profiled heavy {protocol} c64: {cell.get('profile', {}).get('buckets')}")
        if model_probe(service, "heavy") is not None:
            model_replace(service, "heavy")
    return profiles


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if len(cpus) >= 2 and not args.no_pin else None
    client_cpus = set(cpus[1:]) if server_cpus else None
    load_start = os.getloadavg()
    git = git_state()
    print(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; server on CPU "
          f"{sorted(server_cpus) if server_cpus else 'any'}, client on {sorted(client_cpus) if client_cpus else 'any'}")
    started = time.monotonic()

    with affinity(server_cpus):  # the core the server will run on
        raw = run_raw(args.models, args.raw_seconds)

    profiles: list[dict[str, Any]] = []
    with affinity(client_cpus):
        service = start_service(server_cpus=server_cpus)
        try:
            for name in args.models:
                config = raw_throughput.MODELS[name]
                torch.manual_seed(0)
                artifact = _safetensors(architectures.build("mlp", config))
                for suffix, serving in (VARIANTS[policy] for policy in args.policies):
                    served = name + suffix
                    publish_model(service, name=served, model=name, config=config, artifact=artifact,
                                  serving=serving)
                    verify(service, served, config, example_row(config["in_features"]))
            base = baseline(service, warmup=args.warmup, seconds=args.duration, http_client=args.http_client)
            print(f"baseline GET /healthz c16: {base['rps']:,.0f} req/s, "
                  f"{base['server_cpu_ms_per_request']:.2f} ms server CPU per request")
            cells = run_grid(service, args)
            tab = None if args.no_tabular else run_tabular(service, args)
            if args.py_spy:
                profiles = run_profiles(service, args)
        finally:
            log_tail = service.log_tail()
            service.stop()
    if any(c["errors"] for c in cells + (tab["cells"] if tab else [])):
        print(f"server log tail:\n{log_tail}")

    report: dict[str, Any] = {
        "benchmark": "torchwire",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "settings": {
            "quick": args.quick,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "raw_seconds": args.raw_seconds,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "client_cpus": sorted(client_cpus) if client_cpus else None,
            "http_generator": wrk_version() if args.http_client == "wrk" else "aiohttp (asyncio)",
            "ws_generator": f"websockets (asyncio), at most {WS_PER_SOCKET} in flight per socket",
            "batched": BATCHED,
            "fixed": FIXED,
            "unbatched": UNBATCHED,
            "policies": args.policies,
            "torch_threads": 1,
        },
        "raw": raw,
        "baseline": base,
        "service": cells,
        "tabular": tab,
        "floors": floors(cells, raw),
        "profiles": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite(report), indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown != "-":
        write_markdown(Path(args.markdown), markdown(report))
        print(f"wrote {args.markdown}")
    for f in report["floors"]:
        print(f"{'PASS' if f['pass'] else 'FAIL'}  {f['floor']}: {f['detail']}")
    print(f"done in {report['wall_seconds']:.0f} s")
    return 0


def _safetensors(module: torch.nn.Module) -> bytes:
    """The state_dict as safetensors. inference/formats.py `sniff` tests for the pickle magic (0x80, then a
    protocol byte 2-5) before the safetensors header, and the light MLP's header is 640 bytes long, whose
    little-endian length prefix starts 0x80 0x02: the server would refuse it as a pickle. A metadata
    entry (which the server ignores) lengthens the header until the prefix is unambiguous."""
    import safetensors.torch

    state = module.state_dict()
    data = safetensors.torch.save(state)
    pad = ""
    while data[0] == 0x80 and 2 <= data[1] <= 5:
        pad += "-"
        data = safetensors.torch.save(state, metadata={"torchwire-bench": pad})
    return data


if __name__ == "__main__":
    raise SystemExit(main())
