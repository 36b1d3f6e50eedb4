"""For the benches: CPU accounting (/proc and rusage), the server's batch metrics, and a py-spy profiler.

Nothing here imports Django: the server is measured from outside, as an operator would.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # load and service import this module
    from load import Load
    from service import Service

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


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and all their descendants, from /proc."""
    seen: set[int] = set()
    total = 0.0
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    stack.extend(int(c) for c in (task / "children").read_text().split())
    return total



def self_cpu() -> float:
    """This process's user plus system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """User plus system CPU seconds of this process's waited-for children (wrk) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_METRIC_LINE = re.compile(
    r"^(torchwire_batch_size_rows_sum|torchwire_batch_size_rows_count|torchwire_batch_compute_seconds_sum)"
    r"\{([^}]*)\}\s+(\S+)$"
)


def batch_metrics(text: str) -> dict[str, dict[str, float]]:
    """Per model: rows, batches and forward-pass seconds so far, summed over versions, from the text of
    /metrics."""
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


# -- one measured window ---------------------------------------------------------------------------


class Window:
    """Server-side deltas over one measured window: CPU of the uvicorn process (all threads) and the
    model's batch statistics from /metrics."""

    def __init__(self, service: Service, model: str, *, py_spy: str | None = None, seconds: float = 0.0) -> None:
        self.service = service
        self.model = model
        self.py_spy = py_spy
        self.seconds = seconds
        self.profiler: Profiler | None = None
        self.profile: dict[str, Any] | None = None
        self.result: dict[str, float] = {}

    def start(self) -> None:
        self.stats = self.service.metrics().get(self.model, {})
        self.cpu = cpu_seconds(self.service.pid)
        self.machine = machine_cpu_seconds()
        self.started = time.monotonic()
        if self.py_spy:
            self.profiler = Profiler(self.py_spy, self.service.pid, self.seconds)

    def end(self) -> None:
        wall = time.monotonic() - self.started
        cpu = cpu_seconds(self.service.pid) - self.cpu
        busy, steal = (now - before for now, before in zip(machine_cpu_seconds(), self.machine, strict=True))
        if self.profiler is not None:
            self.profile = self.profiler.summary()
        stats = self.service.metrics().get(self.model, {})
        rows = stats.get("rows", 0.0) - self.stats.get("rows", 0.0)
        batches = stats.get("batches", 0.0) - self.stats.get("batches", 0.0)
        compute = stats.get("compute_s", 0.0) - self.stats.get("compute_s", 0.0)
        self.result = {
            "server_cpu_s": cpu,
            "server_cpu": cpu / wall,
            "mean_batch": rows / batches if batches else math.nan,
            "runner_busy": compute / wall,
            "machine_busy": busy / wall,
            "steal": steal / wall,
        }


def cell_numbers(load: Load, window: Window) -> dict[str, Any]:
    result = window.result
    client_cpu = load.client_cpu_s / load.seconds if load.seconds else math.nan
    return {
        "generator": load.generator,
        "requests": load.ok,
        "errors": load.errors,
        "seconds": round(load.seconds, 3),
        "rps": load.ok / load.seconds if load.seconds else 0.0,
        "latency_ms": load.latency_ms,
        "mean_batch": result["mean_batch"],
        "runner_busy": result["runner_busy"],
        "server_cpu": result["server_cpu"],
        "server_cpu_ms_per_request": 1000 * result["server_cpu_s"] / load.ok if load.ok else math.nan,
        "client_cpu": client_cpu,
        # What the rest of the machine used meanwhile (other users, this script's bookkeeping): high values
        # mean a disturbed cell. The window is slightly longer than wrk's, so this is approximate.
        "other_cpu": max(0.0, result["machine_busy"] - result["server_cpu"] - client_cpu),
        "steal": result["steal"],
        "error_sample": load.error_sample,
    }


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
    ("batcher, pool, metrics", ("inference/batcher.py", "inference/batch_queue.py", "inference/dispatch.py",
                                "inference/pool.py", "prometheus_client/", "app/serving/runtime.py")),
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
