"""For bench/run.py: the service under test, the load generators that drive it, and a profiler.

The service is a private Redis, a fresh SQLite database and one uvicorn process with production
settings, with the reference models published through the API. Everything lives in one temporary
directory that `Service.stop` removes. Nothing here imports Django: the server is a subprocess, set up
the way an operator would (migrate, ensure_admin, log in, create an API key, publish, promote).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app import config
from app.launcher.process import LauncherError, free_port, start_redis, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of every thread of ``pid`` so far (/proc/<pid>/stat utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, all cores, from /proc/stat. Busy minus what
    the server and the client used is what everything else on the machine took during a window."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


@dataclass
class Service:
    url: str
    ws_url: str
    proc: subprocess.Popen[bytes]
    redis: subprocess.Popen[bytes]
    tmp: Path
    log: Path
    env: dict[str, str]
    api_key: str = ""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for proc in (self.proc, self.redis):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per model: rows, batches and forward-pass seconds so far, summed over versions (from /metrics,
        which is open to loopback callers)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        totals: dict[str, dict[str, float]] = {}
        for line in text.splitlines():
            match = _METRIC_LINE.match(line)
            if match is None:
                continue
            name, labels, value = match.groups()
            model = re.search(r'model="([^"]*)"', labels)
            if model is None:
                continue
            entry = totals.setdefault(model.group(1), {"rows": 0.0, "batches": 0.0, "compute_s": 0.0})
            key = {
                "torchwire_batch_size_rows_sum": "rows",
                "torchwire_batch_size_rows_count": "batches",
                "torchwire_batch_compute_seconds_sum": "compute_s",
            }[name]
            entry[key] += float(value)
        return totals


_METRIC_LINE = re.compile(
    r"^(torchwire_batch_size_rows_sum|torchwire_batch_size_rows_count|torchwire_batch_compute_seconds_sum)"
    r"\{([^}]*)\}\s+(\S+)$"
)


def _run_manage(args: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def start_service(*, server_cpus: set[int] | None, extra_env: dict[str, str] | None = None,
                  app: str = "asgi:application", timeout: float = 90) -> Service:
    """Starts Redis and uvicorn (single process, production settings, one torch thread). ``server_cpus``
    pins uvicorn (all of its threads: set before exec, so every thread inherits it). ``extra_env`` and
    ``app`` are for experiments: the same bench against another configuration or a wrapped app."""
    tmp = Path(tempfile.mkdtemp(prefix="torchwire-bench-"))
    redis_port = free_port()
    redis = start_redis(redis_port, tmp / "redis")
    port = free_port()
    env = dict(os.environ)
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "AWS_ENDPOINT_URL", "PROMETHEUS_MULTIPROC_DIR",
                 "DJANGO_SETTINGS_MODULE", "TORCHWIRE_JWT_SIGNING_KEY"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "TORCHWIRE_TORCH_THREADS": "1",
            "LOG_LEVEL": "WARNING",
            "TORCHWIRE_VAR_DIR": str(tmp / "var"),
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "STORAGE_URL": f"file://{tmp / 'storage'}",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "PYTHONUNBUFFERED": "1",
            # torch reads these at import; one thread is also what TORCHWIRE_TORCH_THREADS sets per runner.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **(extra_env or {}),
        }
    )
    log = tmp / "uvicorn.log"
    try:
        _run_manage(["migrate", "--noinput"], env)
        _run_manage(["ensure_admin"], env)
        cpus = set(server_cpus) if server_cpus else None
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                # The launcher's command line (app/launcher.py) with one worker: uvicorn picks uvloop and
                # httptools when installed, as in production.
                [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                 "--lifespan", "on", "--no-server-header", "--proxy-headers",
                 "--timeout-graceful-shutdown", str(config.default("drain_seconds"))],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
    except BaseException:
        redis.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    service = Service(url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}", proc=proc, redis=redis,
                      tmp=tmp, log=log, env=env)
    try:
        wait_until_answers(lambda: _ready(service.url), what="uvicorn", timeout=timeout, poll=proc.poll)
    except LauncherError as exc:
        tail = service.log_tail()
        service.stop()
        raise RuntimeError(f"{exc} on {service.url}:\n{tail}") from None
    service.api_key = _api_key(service)
    return service


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _check(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                           f"{response.text[:500]}")
    return response.json() if response.content else None


def _api_key(service: Service) -> str:
    """Logs in as the admin ensure_admin created and makes an API key: a credential that does not expire
    in the middle of a run, checked on every request the way machine clients are."""
    password = (Path(service.env["TORCHWIRE_VAR_DIR"]) / "admin-password.txt").read_text().strip()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        tokens = _check(client.post("/api/v1/auth/token", json={"username": "admin", "password": password}))
        headers = {"Authorization": f"Bearer {tokens['access']}"}
        created = _check(client.post("/api/v1/auth/api-keys", json={"name": "bench"}, headers=headers), 201)
    return str(created["key"])


def publish_model(service: Service, *, name: str, model: str, config: dict[str, Any], artifact: bytes,
                  serving: dict[str, Any]) -> None:
    """Creates ``name`` (a copy of reference model ``model``) with its serving config, publishes
    ``artifact`` (safetensors of an ``mlp``) as version 1 and promotes it to production. The serving
    config is set before anything is loaded: a PATCH of a loaded model fails (see bench/RESULTS.md)."""
    with httpx.Client(base_url=service.url, timeout=120, headers=_auth(service)) as client:
        _check(client.post("/api/v1/models", json={"name": name, "visibility": "private"}), 201)
        _check(client.patch(f"/api/v1/models/{name}", json=serving))
    service.models[name] = {"model": model, "config": config, "serving": serving, "artifact": artifact,
                            "version": 0}
    _publish_and_promote(service, name)


def _auth(service: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.api_key}"}


def _publish_and_promote(service: Service, name: str) -> None:
    """Publishes the model's artifact as the next version, promotes it and waits until the server answers
    with it (a promotion hot-swaps in the background)."""
    entry = service.models[name]
    manifest = json.dumps({"format": "safetensors", "architecture": "mlp", "config": entry["config"]})
    with httpx.Client(base_url=service.url, timeout=120, headers=_auth(service)) as client:
        created = _check(
            client.post(
                f"/api/v1/models/{name}/versions",
                files={"artifact": ("model.safetensors", entry["artifact"], "application/octet-stream")},
                data={"manifest": manifest},
            ),
            201,
        )
        version = int(created["version"])
        _check(client.post(f"/api/v1/models/{name}/versions/{version}/promote", json={"stage": "production"}))
        entry["version"] = version
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if model_probe(service, name, client) is None:
                return
            time.sleep(0.2)
    raise RuntimeError(f"{name} version {version} was not served within 60 s:\n{service.log_tail()}")


def model_probe(service: Service, name: str, client: httpx.Client | None = None) -> str | None:
    """None when ``name`` answers a one-row V2 request with its current version, else what went wrong."""
    entry = service.models[name]
    features = int(entry["config"]["in_features"])
    body = {"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": [0.0] * features}]}
    own = client is None
    client = client or httpx.Client(base_url=service.url, timeout=30, headers=_auth(service))
    try:
        response = client.post(f"/v2/models/{name}/infer", json=body)
    finally:
        if own:
            client.close()
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:300]}"
    served = response.json().get("model_version")
    return None if served == str(entry["version"]) else f"served version {served}, want {entry['version']}"


def model_replace(service: Service, name: str) -> None:
    """Serves a fresh copy of ``name``: the same weights as a new version, promoted. The way to recover
    a version whose batcher died (inference/batcher.py, see bench/RESULTS.md) without a restart."""
    _publish_and_promote(service, name)


# -- load generators ---------------------------------------------------------------------------------
# All closed loop: each of `concurrency` callers sends its next request when the previous answer came.


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


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
        before = _children_cpu()
        result = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", script, url],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
        cpu = _children_cpu() - before
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
        cpu, started = _self_cpu(), time.monotonic()
        await asyncio.gather(*(caller(i, started + self.seconds, True) for i in range(self.concurrency)))
        return time.monotonic() - started, _self_cpu() - cpu

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


# -- profiling ---------------------------------------------------------------------------------------

# Where a py-spy sample of the server goes, first match wins. The leaf frame decides the first bucket:
# time spent handing work to threads and back, whoever asked for it.
_HOP_LEAVES = ("asgiref/sync.py", "concurrent/futures/", "threading.py", "asyncio/futures.py", "asyncio/tasks.py")
_BUCKETS = (
    ("model forward (GIL-holding part)", ("inference/runner.py",)),
    ("API key check: ORM query + SQLite connection", ("credential_authenticate",)),
    ("prediction recording (app/monitoring)", ("app/monitoring/recording.py", "app/monitoring/services.py")),
    ("Django sync middleware bodies", ("django/middleware/", "django/contrib/sessions/", "django/contrib/messages/",
                                       "django/contrib/auth/middleware")),
    ("close_old_connections (request signals; channels, per message)", ("close_old_connections", "reset_queries")),
    ("JSON and V2 codecs", ("inference/v2.py", "inference/jsonio.py", "inference/datatypes.py", "app/serving/arrays.py",
                            "json/", "outputs_to_json")),
    ("batcher, pool, metrics", ("inference/batcher.py", "inference/pool.py", "prometheus_client/",
                                "app/serving/runtime.py")),
    ("inference fast path: routing, auth, request/response (app/serving)", ("app/serving/fastpath.py",
                                                                            "app/serving/calls.py",
                                                                            "app/accounts/auth_cache.py")),
    # channels/routing.py (ProtocolTypeRouter) is on every stack, HTTP included: not a needle here.
    ("websocket consumer (channels)", ("channels/consumer.py", "channels/generic/", "realtime/")),
    ("django-ninja / pydantic", ("ninja", "pydantic")),
    ("Django request handling (other)", ("django/",)),
    ("uvicorn / httptools / websockets protocol", ("uvicorn/", "websockets/", "httptools")),
)


def py_spy_binary() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else None


class Profiler:
    """py-spy sampling the server while the GIL is held (``--gil``): what the one Python thread that can
    run at a time spends its time on. Forward passes release the GIL inside torch, so they show up
    only in the runner's busy share, not here."""

    def __init__(self, binary: str, pid: int, seconds: float) -> None:
        self.output = Path(tempfile.mkstemp(prefix="torchwire-pyspy-", suffix=".txt")[1])
        self.seconds = seconds
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(max(1, math.ceil(seconds))), "--rate", "200",
             "--gil", "--nonblocking", "--format", "raw", "--output", str(self.output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def summary(self) -> dict[str, Any]:
        try:
            _, stderr = self.proc.communicate(timeout=self.seconds + 60)
            stacks = self.output.read_text().splitlines() if self.output.exists() else []
        finally:
            self.output.unlink(missing_ok=True)
        if self.proc.returncode != 0 and not stacks:
            return {"error": stderr.decode(errors="replace")[-500:]}
        return summarise_stacks(stacks, self.seconds)


def summarise_stacks(lines: list[str], seconds: float) -> dict[str, Any]:
    buckets: dict[str, int] = {}
    functions: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")[1:]  # the first entry names the thread
        leaf = frames[-1] if frames else ""
        leaves[leaf] = leaves.get(leaf, 0) + n
        if any(part in leaf for part in _HOP_LEAVES):
            name = "thread hops: sync_to_async, executors, thread start/join"
        else:
            name = next((b for b, needles in _BUCKETS if any(x in stack for x in needles)), "other")
        buckets[name] = buckets.get(name, 0) + n
        for frame in dict.fromkeys(f.split(":")[0] + ")" if "(" in f else f for f in frames):
            functions[frame] = functions.get(frame, 0) + n
    share = {k: round(v / total, 4) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])} if total else {}
    top = sorted(functions.items(), key=lambda kv: -kv[1])[:25]
    return {
        "samples": total,
        # Samples are taken at 200 Hz only while some thread holds the GIL.
        "gil_held": round(total / (200 * seconds), 3) if seconds else None,
        "buckets": share,
        "top_inclusive": [{"function": f, "share": round(n / total, 4)} for f, n in top] if total else [],
        "top_self": [{"function": f, "share": round(n / total, 4)}
                     for f, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:25]] if total else [],
    }
