"""For the benches: the service under test (the load generators are in bench/load.py, CPU accounting and
the profiler in bench/accounting.py).

The service is a private Redis, a fresh SQLite database and one uvicorn process with production
settings, with the reference models published through the API. Everything lives in one temporary
directory that `Service.stop` removes. Nothing here imports Django: the server is a subprocess, set up
the way an operator would (migrate, ensure_admin, log in, create an API key, publish, promote).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from accounting import batch_metrics

from app import config
from app.launcher.process import LauncherError, free_port, start_redis, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent


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
        return batch_metrics(httpx.get(self.url + "/metrics", timeout=10).text)


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
