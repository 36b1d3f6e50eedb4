"""Helpers for tests that run the real service: uvicorn and Celery subprocesses on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.envsetup import ROOT, RUN_DIR, free_port


@dataclass
class Server:
    url: str
    ws_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        """What the server logged after `log_size` returned ``offset``."""
        with self.log.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def child_env(overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def start_uvicorn(env: Mapping[str, str | None] | None = None, *, ready_path: str = "/healthz",
                  timeout: float = 60) -> Server:
    """uvicorn as `make run` starts it (no proxy in front, so no proxy headers trusted)."""
    port = free_port()
    log = RUN_DIR / f"uvicorn-{port}.log"
    full_env = child_env(env)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--lifespan", "on", "--no-server-header", "--no-proxy-headers", "--ws-ping-interval", "20"],
            cwd=ROOT,
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}", proc=proc, log=log,
                    env=full_env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"uvicorn did not become ready on {server.url}:\n{server.log_tail()}")


def start_celery_worker(env: Mapping[str, str | None] | None = None, *, hostname: str = "test-worker@%h",
                        timeout: float = 60, log: Path | None = None,
                        extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """``extra``: more `celery worker` options; the last ``--pool`` given wins."""
    import redis

    log = log or RUN_DIR / "celery-worker.log"
    full_env = child_env(env)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-l", "INFO", "-c", "1",
             "--pool", "prefork", f"--hostname={hostname}", "-Q", "default", "--without-gossip", "--without-mingle",
             *(extra or [])],
            cwd=ROOT,
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(full_env["REDIS_URL"])
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{log.read_text(errors='replace')[-4000:]}")
        if b"ready." in log.read_bytes():
            client.close()
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"celery worker not ready:\n{log.read_text(errors='replace')[-4000:]}")


@dataclass
class Account:
    username: str
    password: str
    role: str
    pk: int


def login(client: httpx.Client, account: Account) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", json={"username": account.username, "password": account.password})
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_jwt(user_id: int, *, token_type: str = "access", lifetime: float = 300, key: str | None = None,
             aud: str = "torchwire", iss: str = "torchwire", alg: str = "HS256", **extra: object) -> str:
    """A JWT shaped like the service's own, so tests can vary one claim at a time."""
    import jwt

    now = int(time.time())
    payload: dict[str, object] = {"token_type": token_type, "exp": now + int(lifetime), "iat": now,
                                  "jti": uuid.uuid4().hex, "user_id": user_id, "aud": aud, "iss": iss, **extra}
    return jwt.encode(payload, key if key is not None else os.environ["SECRET_KEY"], algorithm=alg)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    import os

    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children
