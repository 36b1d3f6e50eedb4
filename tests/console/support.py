"""The web console under test: the standalone Next.js server (built by `make console-build`) in front of
a uvicorn that forwards every non-backend path to it, as `make run` serves them."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app import console_build
from tests.envsetup import ROOT, RUN_DIR, free_port
from tests.support import Server, child_env, start_uvicorn

CHROMIUM = os.environ.get("TORCHWIRE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def require(what: str, ok: bool, why: str) -> None:
    """Skips (fails under CI=true, where .ci/run installs everything) when a tool is missing."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {why}; {what}")
    pytest.skip(why)


def require_console() -> None:
    require("run `make console-build` first (make test does)", console_build.server_js().exists(),
            "the console is not built (web/.next/standalone)")
    require("run `npm ci` in web/", (ROOT / "web" / "node_modules" / ".bin" / "vitest").exists(),
            "web/node_modules is missing")


def require_chromium() -> None:
    require("install Debian's chromium (.ci/run does)", os.access(CHROMIUM, os.X_OK), f"no chromium at {CHROMIUM}")


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        # Its own process group: the standalone server's children would otherwise keep the port.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_console(api_url: str, *, port: int | None = None, secret: str | None = None,
                  timeout: float = 60) -> Console:
    port = port or free_port()
    log = RUN_DIR / f"console-{port}.log"
    env = child_env(console_build.server_env(port=port, api_url=api_url, secret=secret or secrets.token_urlsafe(40)))
    with log.open("wb") as fh:
        proc = subprocess.Popen(["node", str(console_build.server_js())], cwd=console_build.standalone_dir(), env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    console = Console(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the console server exited with {proc.returncode}:\n{console.log_tail()}")
        try:
            httpx.get(console.url + "/login", timeout=2)
            return console
        except httpx.TransportError:
            time.sleep(0.2)
    console.stop()
    raise RuntimeError(f"the console server did not answer:\n{console.log_tail()}")


@contextmanager
def console_stack(service_env: dict[str, str],
                  extra_env: dict[str, str] | None = None) -> Iterator[tuple[Server, Console]]:
    """uvicorn (the public origin) and the console server behind it, each on a free port."""
    console_port = free_port()
    bridge = {"TORCHWIRE_CONSOLE_URL": f"http://127.0.0.1:{console_port}"}
    server = start_uvicorn({**service_env, **(extra_env or {}), **bridge})
    try:
        console = start_console(server.url, port=console_port)
        try:
            yield server, console
        finally:
            console.stop()
    finally:
        server.stop()
