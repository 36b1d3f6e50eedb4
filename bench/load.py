"""For the benches: closed-loop load generators (wrk, aiohttp, websockets) and what they saw (`Load`).

All closed loop: each of `concurrency` callers sends its next request when the previous answer came.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from accounting import children_cpu, self_cpu

PROTOCOLS = ("rest", "v2", "ws")


@dataclass
class Load:
    """What a generator saw in its measured window."""

    generator: str
    ok: int
    errors: int
    seconds: float
    latency_ms: dict[str, float]
    client_cpu_s: float
    error_sample: str = ""


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {k: math.nan for k in ("mean", "p50", "p90", "p99", "max")}
    values = sorted(latencies_s)

    def rank(p: float) -> float:
        return 1000 * values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]

    return {"mean": 1000 * sum(values) / len(values), "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99),
            "max": 1000 * values[-1]}


_WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d," ..
    "\\"status\\":%d,\\"timeout\\":%d,\\"mean\\":%f,\\"max\\":%d,\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def wrk_run(url: str, *, concurrency: int, seconds: int, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Load:
    """wrk with one thread and ``concurrency`` keep-alive connections; POST when there is a body.

    wrk stops by closing its connections with requests still in flight, which the server sees as
    clients going away mid-request."""
    lua_headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    script_text = _WRK_SCRIPT.format(
        method="POST" if body is not None else "GET",
        body=f"[==[{body.decode()}]==]" if body is not None else "nil",
        headers=lua_headers,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script_text)
        script = fh.name
    try:
        before = children_cpu()
        result = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", script, url],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
        cpu = children_cpu() - before
    finally:
        os.unlink(script)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return Load(
        generator="wrk",
        ok=raw["requests"] - raw["status"],
        errors=errors,
        seconds=raw["duration_us"] / 1e6,
        latency_ms={k: raw[k] / 1000 for k in ("mean", "p50", "p90", "p99", "max")},
        client_cpu_s=cpu,
        error_sample=f"wrk counted errors: {raw}" if errors else "",
    )


class Phases:
    """Runs ``concurrency`` closed-loop callers for a warm-up, waits for every answer, calls ``mark`` (to
    snapshot the server), then runs them again for the measured window."""

    def __init__(self, concurrency: int, warmup: float, seconds: float, mark: Callable[[], None]) -> None:
        self.concurrency = concurrency
        self.warmup = warmup
        self.seconds = seconds
        self.mark = mark
        self.latencies: list[float] = []
        self.errors = 0
        self.error_sample = ""

    async def run(self, one: Callable[[int], Awaitable[str | None]]) -> tuple[float, float]:
        """``one(caller)`` sends one request and returns None or what went wrong. Returns the measured
        seconds and this process's CPU seconds over them."""

        async def caller(index: int, until: float, record: bool) -> None:
            while time.monotonic() < until:
                started = time.perf_counter()
                error = await one(index)
                if not record:
                    continue
                if error is None:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.errors += 1
                    self.error_sample = self.error_sample or error

        until = time.monotonic() + self.warmup
        await asyncio.gather(*(caller(i, until, False) for i in range(self.concurrency)))
        self.mark()
        cpu, started = self_cpu(), time.monotonic()
        await asyncio.gather(*(caller(i, started + self.seconds, True) for i in range(self.concurrency)))
        return time.monotonic() - started, self_cpu() - cpu

    def load(self, generator: str, seconds: float, cpu: float) -> Load:
        return Load(generator, len(self.latencies), self.errors, seconds, latency_summary(self.latencies), cpu,
                    self.error_sample)


async def http_load(url: str, phases: Phases, *, body: bytes | None = None,
                    headers: dict[str, str] | None = None) -> Load:
    """The asyncio stand-in for wrk (aiohttp, one keep-alive connection per caller)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=phases.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(caller: int) -> str | None:
            method = "POST" if body is not None else "GET"
            async with session.request(method, url, data=body) as response:
                payload = await response.read()
                return None if response.status == 200 else f"{response.status}: {payload[:300]!r}"

        seconds, cpu = await phases.run(one)
    return phases.load("aiohttp", seconds, cpu)


async def ws_load(ws_url: str, key: str, message: Callable[[str], str], phases: Phases, *,
                  per_socket: int) -> Load:
    """Callers share sockets, at most ``per_socket`` to one; each socket's answers come back in any order
    and are matched to their callers by id."""
    import websockets

    sockets = max(1, math.ceil(phases.concurrency / per_socket))
    ids = itertools.count()
    waiting: dict[str, asyncio.Future[str | None]] = {}

    async def reader(ws: Any) -> None:
        async for raw in ws:
            answer = json.loads(raw)
            future = waiting.pop(str(answer.get("id")), None)
            if future is not None and not future.done():
                future.set_result(None if "outputs" in answer else str(answer)[:300])

    async with contextlib.AsyncExitStack() as stack:
        conns = [
            await stack.enter_async_context(
                websockets.connect(f"{ws_url}/ws/v1/infer", subprotocols=["bearer", key],  # type: ignore[list-item]
                                   max_size=2**22, compression=None)
            )
            for _ in range(sockets)
        ]
        readers = [asyncio.create_task(reader(ws)) for ws in conns]
        loop = asyncio.get_running_loop()

        async def one(caller: int) -> str | None:
            rid = str(next(ids))
            future: asyncio.Future[str | None] = loop.create_future()
            waiting[rid] = future
            await conns[caller % sockets].send(message(rid))
            return await asyncio.wait_for(future, 30)

        try:
            seconds, cpu = await phases.run(one)
        finally:
            for task in readers:
                task.cancel()
    return phases.load("websockets", seconds, cpu)


def run_async(coro: Coroutine[Any, Any, Load]) -> Load:
    """The asyncio generators run on uvloop when it is installed: less client CPU per request."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- what the generators send: one row per request ----------------------------------------------------


def rest_body(row: list[float]) -> bytes:
    return json.dumps({"inputs": [row]}, separators=(",", ":")).encode()


def v2_body(row: list[float]) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]},
                      separators=(",", ":")).encode()


def ws_template(model: str, row: list[float]) -> Callable[[str], str]:
    rest = json.dumps({"model": model, "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                                                    "data": row}]}, separators=(",", ":"))
    head = '{"id":"'
    tail = '",' + rest[1:]
    return lambda rid: head + rid + tail
