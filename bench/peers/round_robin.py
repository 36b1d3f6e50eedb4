"""`make bench-peers`: Torchwire next to LitServe and MLServer, the same models, the same batching limits.

Each peer runs from its own venv (bench/.venvs/<peer>, made here from bench/peers/requirements-<peer>.txt
and kept until those files change), serving the bench's two MLPs (bench/raw_throughput.py: the same
seed-0 weights, written as safetensors for every server) with the same limits as Torchwire's batched
cells: at most 64 rows per forward pass, 5 ms for company, one torch thread. Pairs that speak the same
protocol are compared: Torchwire's REST predict with LitServe's ``/predict`` (same body), Torchwire's V2
with MLServer's V2 (same body). Torchwire checks an API key on every request; the peers have no auth.

Absolute numbers drift on a shared machine from one minute to the next, so every server runs for the
whole session, the measurements alternate (Torchwire first in even rounds, the peer first in odd ones),
and the result is each round's ratio Torchwire / peer, over several rounds, with the load average and
CPU steal of every cell. All servers are pinned to the first core, the load generator to the others.

    .venv/bin/python bench/peers/round_robin.py [--rounds 4] [--duration 8] [--models light,heavy] [--concurrency 1,64]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

PEERS = Path(__file__).resolve().parent
BENCH = PEERS.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import raw_throughput  # noqa: E402
import report as bench_report  # noqa: E402
import run as bench  # noqa: E402
from accounting import machine_cpu_seconds, tree_cpu_seconds  # noqa: E402
from load import Load, Phases, http_load, rest_body, run_async, v2_body, wrk_run  # noqa: E402
from peer_report import PAIRS, floors, markdown, summarise, write_markdown  # noqa: E402
from service import publish_model, start_service  # noqa: E402

from app.launcher.process import free_port  # noqa: E402
from inference import architectures  # noqa: E402

VENVS = BENCH / ".venvs"
MAX_BATCH = int(bench.BATCHED["max_batch_size"])
MAX_DELAY_MS = float(bench.BATCHED["max_delay_ms"])


# -- venvs -------------------------------------------------------------------------------------------


def ensure_venv(peer: str) -> Path:
    """bench/.venvs/<peer> with its requirements installed; rebuilt when the requirements file changes."""
    requirements = PEERS / f"requirements-{peer}.txt"
    venv = VENVS / peer
    stamp = venv / ".requirements-sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    print(f"making {venv} from {requirements.name} (once; minutes)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    stamp.write_text(digest)
    return python


# -- servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test; ``urls`` by model name, the body protocol it speaks, and its processes."""

    name: str
    protocol: str
    urls: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    stop_hook: Any = None

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.stop_hook is not None:
            self.stop_hook()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _spawn(command: list[str], *, log: Path, cpus: set[int] | None, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.Popen[bytes]:
    def setup() -> None:
        os.setsid()  # its own process group: stop() ends the server's workers with it
        if cpus:
            os.sched_setaffinity(0, cpus)

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("ab") as fh:
        return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                preexec_fn=setup)


def _wait_ready(server: Server, probe: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in server.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(probe, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not become ready ({probe}):\n{server.log_tail()}")


def model_dirs(workdir: Path, models: list[str]) -> dict[str, Path]:
    """Each model as config.json + model.safetensors, the weights Torchwire's bench publishes."""
    import safetensors.torch

    out = {}
    for name in models:
        config = raw_throughput.MODELS[name]
        torch.manual_seed(0)
        module = architectures.build("mlp", config)
        directory = workdir / "models" / name
        directory.mkdir(parents=True)
        (directory / "config.json").write_text(json.dumps(config))
        safetensors.torch.save_file(module.state_dict(), str(directory / "model.safetensors"))
        out[name] = directory
    return out


def start_torchwire(models: list[str], cpus: set[int] | None) -> Server:
    service = start_service(server_cpus=cpus)
    for name in models:
        config = raw_throughput.MODELS[name]
        torch.manual_seed(0)
        artifact = bench._safetensors(architectures.build("mlp", config))
        publish_model(service, name=name, model=name, config=config, artifact=artifact, serving=bench.BATCHED)
    urls = {**{f"rest:{m}": f"{service.url}/api/v1/models/{m}/predict" for m in models},
            **{f"v2:{m}": f"{service.url}/v2/models/{m}/infer" for m in models}}
    return Server("torchwire", "both", urls, procs=[service.proc],
                  headers={"Authorization": f"Bearer {service.api_key}"}, log=service.log,
                  stop_hook=service.stop)


def start_litserve(python: Path, dirs: dict[str, Path], workdir: Path, cpus: set[int] | None) -> Server:
    """One LitServe process per model (a LitServer serves one API), each with its own port."""
    log = workdir / "litserve.log"
    server = Server("litserve", "rest", {}, log=log)
    for name, directory in dirs.items():
        port = free_port()
        server.procs.append(_spawn(
            [str(python), str(PEERS / "litserve_app.py"), str(directory), "--port", str(port),
             "--max-batch-size", str(MAX_BATCH), "--batch-timeout", str(MAX_DELAY_MS / 1000)],
            log=log, cpus=cpus, cwd=workdir,
        ))
        server.urls[f"rest:{name}"] = f"http://127.0.0.1:{port}/predict"
        _wait_ready(server, f"http://127.0.0.1:{port}/health")
    return server


def start_mlserver(python: Path, dirs: dict[str, Path], workdir: Path, cpus: set[int] | None) -> Server:
    """One MLServer with both models; inference in the server process (``parallel_workers: 0``): one core
    gains nothing from a worker pool but the IPC."""
    repo = workdir / "mlserver"
    repo.mkdir()
    port = free_port()
    (repo / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "debug": False, "load_models_at_startup": True,
    }))
    for name, directory in dirs.items():
        (repo / name).mkdir()
        (repo / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_runtime.TorchMLP",
            "max_batch_size": MAX_BATCH, "max_batch_time": MAX_DELAY_MS / 1000,
            "parameters": {"uri": str(directory)},
        }))
    log = workdir / "mlserver.log"
    mlserver = python.parent / "mlserver"
    server = Server("mlserver", "v2", {f"v2:{m}": f"http://127.0.0.1:{port}/v2/models/{m}/infer" for m in dirs},
                    log=log)
    server.procs.append(_spawn([str(mlserver), "start", str(repo)], log=log, cpus=cpus, cwd=workdir,
                               env={"PYTHONPATH": str(PEERS)}))
    for name in dirs:
        _wait_ready(server, f"http://127.0.0.1:{port}/v2/models/{name}/ready")
    return server


# -- measuring ---------------------------------------------------------------------------------------


def body_for(protocol: str, row: list[float]) -> bytes:
    return rest_body(row) if protocol == "rest" else v2_body(row)


def answer_values(protocol: str, payload: dict[str, Any]) -> list[float]:
    if protocol == "rest":
        return [float(x) for x in payload["outputs"][0]]
    return [float(x) for x in payload["outputs"][0]["data"]]


def verify(server: Server, key: str, protocol: str, model: str) -> None:
    """The server computes what Torchwire's reference does, before anything is measured."""
    row = bench.example_row(raw_throughput.MODELS[model]["in_features"])
    want = bench.expected_outputs(raw_throughput.MODELS[model], row)
    response = httpx.post(server.urls[key], content=body_for(protocol, row),
                          headers={**server.headers, "Content-Type": "application/json"}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{server.name} {key}: {response.status_code} {response.text[:300]}")
    got = answer_values(protocol, response.json())
    close = all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(got, want, strict=False))
    if len(got) != len(want) or not close:
        raise RuntimeError(f"{server.name} {key} answered {got[:4]}..., expected {want[:4]}...")


def measure(server: Server, key: str, protocol: str, model: str, concurrency: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    row = bench.example_row(raw_throughput.MODELS[model]["in_features"])
    body = body_for(protocol, row)
    headers = {**server.headers, "Content-Type": "application/json"}
    url = server.urls[key]
    run_async(http_load(url, Phases(concurrency, args.warmup, 0.0, lambda: None), body=body, headers=headers))
    cpu, machine, started = tree_cpu_seconds(server.pids()), machine_cpu_seconds(), time.monotonic()
    load: Load
    if args.http_client == "wrk":
        load = wrk_run(url, concurrency=concurrency, seconds=max(1, round(args.duration)), body=body, headers=headers)
    else:
        load = run_async(http_load(url, Phases(concurrency, 0.0, args.duration, lambda: None), body=body,
                                   headers=headers))
    wall = time.monotonic() - started
    busy, steal = (b - a for b, a in zip(machine_cpu_seconds(), machine, strict=True))
    server_cpu = (tree_cpu_seconds(server.pids()) - cpu) / wall
    client_cpu = load.client_cpu_s / load.seconds if load.seconds else math.nan
    return {
        "server": server.name, "protocol": protocol, "model": model, "concurrency": concurrency,
        "rps": load.ok / load.seconds if load.seconds else 0.0, "errors": load.errors,
        "error_sample": load.error_sample, "latency_ms": load.latency_ms, "server_cpu": server_cpu,
        "client_cpu": client_cpu, "other_cpu": max(0.0, busy / wall - server_cpu - client_cpu),
        "steal": steal / wall, "load_average": list(os.getloadavg()),
    }


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peers", default="litserve,mlserver", help="comma-separated: litserve, mlserver")
    parser.add_argument("--models", default="light,heavy")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s cells, heavy c64 only")
    parser.add_argument("--http-client", choices=("auto", "wrk", "asyncio"), default="auto")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "peers-latest.json")
    parser.add_argument("--markdown", default=str(BENCH / "RESULTS.md"), help="where the table goes ('-': nowhere)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.5
        args.models, args.concurrency = "heavy", "64"
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    for peer in args.peers:
        if peer not in PAIRS:
            parser.error(f"unknown peer {peer!r}")
    if args.http_client == "auto":
        args.http_client = "wrk" if shutil.which("wrk") else "asyncio"
    return args


def peer_version(python: Path, package: str) -> str:
    result = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "?"


def schedule(args: argparse.Namespace) -> Iterator[tuple[int, str, str, int, list[str]]]:
    """(round, peer, model, concurrency, servers in the order to measure them)."""
    for r, model, concurrency, peer in itertools.product(range(args.rounds), args.models, args.concurrency,
                                                         args.peers):
        yield r, peer, model, concurrency, ["torchwire", peer] if r % 2 == 0 else [peer, "torchwire"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if len(cpus) >= 2 and not args.no_pin else None
    client_cpus = set(cpus[1:]) if server_cpus else None
    pythons = {peer: ensure_venv(peer) for peer in args.peers}
    versions = {peer: peer_version(pythons[peer], peer) for peer in args.peers}
    load_start = os.getloadavg()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="torchwire-peers-"))
    servers: dict[str, Server] = {}
    cells: list[dict[str, Any]] = []
    try:
        with bench.affinity(client_cpus):
            dirs = model_dirs(workdir, args.models)
            servers["torchwire"] = start_torchwire(args.models, server_cpus)
            if "litserve" in args.peers:
                servers["litserve"] = start_litserve(pythons["litserve"], dirs, workdir, server_cpus)
            if "mlserver" in args.peers:
                servers["mlserver"] = start_mlserver(pythons["mlserver"], dirs, workdir, server_cpus)
            for peer, model in itertools.product(args.peers, args.models):
                protocol = PAIRS[peer]
                for name in ("torchwire", peer):
                    verify(servers[name], f"{protocol}:{model}", protocol, model)
            print(f"all servers up and answering correctly; load average {os.getloadavg()[0]:.2f}", flush=True)
            for r, peer, model, concurrency, order in schedule(args):
                protocol = PAIRS[peer]
                for name in order:
                    cell = measure(servers[name], f"{protocol}:{model}", protocol, model, concurrency, args)
                    cell.update(round=r, peer=peer)
                    cells.append(cell)
                    print(f"round {r} {protocol:<4} {model:<5} c{concurrency:<3} {name:<9} {cell['rps']:>7,.0f} req/s "
                          f"p50 {cell['latency_ms']['p50']:6.2f} p99 {cell['latency_ms']['p99']:7.2f} ms  "
                          f"srv {cell['server_cpu']:.2f}  steal {cell['steal']:.2f}  load "
                          f"{cell['load_average'][0]:.2f}  err {cell['errors']}", flush=True)
                    if cell["error_sample"]:
                        print(f"      first error: {cell['error_sample']}")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(cells)
    report: dict[str, Any] = {
        "benchmark": "torchwire-peers",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": bench_report.machine_info(),
        "git": bench_report.git_state(),
        "versions": versions,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "settings": {
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup, "quick": args.quick,
            "server_cpus": sorted(server_cpus) if server_cpus else "any",
            "client_cpus": sorted(client_cpus) if client_cpus else "any",
            "http_generator": bench_report.wrk_version() if args.http_client == "wrk" else "aiohttp (asyncio)",
            "max_batch_size": MAX_BATCH, "max_delay_ms": MAX_DELAY_MS, "torchwire_serving": bench.BATCHED,
        },
        "cells": cells,
        "summary": summary,
        "floors": floors(summary),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench_report.finite(report), indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown != "-":
        write_markdown(Path(args.markdown), markdown(report))
        print(f"wrote {args.markdown}")
    for x in summary:
        print(f"{x['protocol']:<4} {x['model']:<5} c{x['concurrency']:<3} Torchwire / {x['peer']}: "
              f"{x['ratio_mean']:.2f}x (rounds {', '.join(f'{r:.2f}' for r in x['ratios'])})")
    for f in report["floors"]:
        print(f"{'PASS' if f['pass'] else 'FAIL'}  {f['floor']}: {f['detail']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
