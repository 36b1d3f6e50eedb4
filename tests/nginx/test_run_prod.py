"""End to end: `python -m app.launcher --prod` as `make run-prod` starts it, on SQLite and its embedded
Redis: nginx in front of two uvicorn workers on unix sockets, with production settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.launcher import LauncherError, nginx_binary
from tests.support import bearer
from tests.test_launcher import SCRUBBED, SCRUBBED_PREFIXES, _alive, _cmdline, _descendants, _free_port, _wait_exit

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher relies on Linux prctl"),
]


@pytest.fixture(scope="module", autouse=True)
def _needs_nginx() -> None:
    try:
        nginx_binary()
        if shutil.which("openssl") is None:
            raise LauncherError("openssl is not installed")
    except LauncherError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}; .ci/run installs nginx")
        pytest.skip(f"{exc}; `make run-prod` needs it")


class LaunchedProd:
    def __init__(self) -> None:
        # Short: the workers' unix socket paths live under it (108 bytes at most).
        self.root = Path(tempfile.mkdtemp(prefix="tw-prod-"))
        self.var_dir = self.root / "var"
        self.https_port, self.http_port = _free_port(), _free_port()
        self.log_path = self.root / "launcher.log"
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith(SCRUBBED_PREFIXES)}
        env |= {
            "TORCHWIRE_VAR_DIR": str(self.var_dir),
            "TORCHWIRE_EMBEDDED_REDIS_PORT": str(_free_port()),
            "HTTPS_PORT": str(self.https_port),
            "HTTP_PORT": str(self.http_port),
            "STORAGE_URL": f"file://{self.root / 'storage'}",
            "TORCHWIRE_NGINX_WORKER_PROCESSES": "2",
        }
        self.base_url = f"https://127.0.0.1:{self.https_port}"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "app.launcher", "--prod"], cwd=REPO, env=env,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.var_dir / "certs" / "localhost.crt"))

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = self.started + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the launcher exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.base_url}/readyz", verify=self.tls(), timeout=2)
                if response.status_code == 200:
                    return time.monotonic() - self.started
            except (httpx.TransportError, FileNotFoundError, ssl.SSLError):
                pass  # no certificate yet, nginx not listening yet, or a worker not up (502)
            if time.monotonic() > deadline:
                pytest.fail(f"/readyz through nginx was not 200 within {timeout:g}s:\n{self.log()}")
            time.sleep(0.3)

    def close(self) -> None:
        if self.process.poll() is None:
            # After a failure: SIGKILL the launcher, then let its children (PDEATHSIG) finish before the
            # directory goes. Redis must still be able to save there, or it refuses to exit and stays.
            children = _descendants(self.process.pid)
            self.process.kill()
            self.process.wait()
            deadline = time.monotonic() + 20
            while _alive(children) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in children:
                if _alive({pid: children[pid]}):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def launched() -> Iterator[LaunchedProd]:
    launched = LaunchedProd()
    try:
        yield launched
    finally:
        launched.close()


def test_run_prod_serves_through_nginx_and_stops_cleanly(launched: LaunchedProd) -> None:
    print(f"ready through nginx after {launched.wait_ready():.1f}s")
    key_file = launched.var_dir / "secret-key.txt"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (launched.var_dir / "run").stat().st_mode & 0o777 == 0o700

    with httpx.Client(base_url=launched.base_url, verify=launched.tls(), timeout=10) as client:
        password = (launched.var_dir / "admin-password.txt").read_text().strip()
        tokens = client.post("/api/v1/auth/token", json={"username": "admin", "password": password})
        assert tokens.status_code == 200, f"{tokens.text}\n{launched.log()[-6000:]}"
        me = client.get("/api/v1/me", headers=bearer(tokens.json()["access"]))
        assert me.json()["role"] == "admin"
        # Production settings: HSTS on every answer (here from nginx).
        assert me.headers["strict-transport-security"].startswith("max-age=31536000")
        # collectstatic ran, and nginx serves its output (the workers do not serve static files).
        css = client.get("/static/admin/css/base.css")
        assert css.status_code == 200 and css.headers["content-type"] == "text/css"
        # Multiprocess metrics, for an admin from outside loopback.
        metrics = client.get("/metrics", headers=bearer(tokens.json()["access"]))
        assert metrics.status_code == 200 and "torchwire_" in metrics.text
        for _ in range(6):
            assert client.get("/healthz").status_code == 200
    redirect = httpx.get(f"http://127.0.0.1:{launched.http_port}/admin/", timeout=10)
    assert redirect.status_code == 308 and redirect.headers["location"] == f"{launched.base_url}/admin/"

    # nginx balanced over both workers' sockets.
    lines = (launched.var_dir / "nginx" / "logs" / "access.log").read_text().splitlines()
    upstreams = {json.loads(line)["upstream"] for line in lines if json.loads(line)["path"] == "/healthz"}
    assert {Path(u.removeprefix("unix:")).name for u in upstreams} == {"web-0.sock", "web-1.sock"}, upstreams

    processes = _descendants(launched.process.pid)
    commands = [_cmdline(pid) for pid in processes]
    assert sum("--uds" in c for c in commands) == 2, commands
    assert any(c.startswith("nginx: master") for c in commands), commands

    launched.process.send_signal(signal.SIGTERM)
    code = _wait_exit(launched.process, timeout=60)
    assert code == 0, launched.log()
    assert _alive(processes) == [], launched.log()
    log = launched.log()
    assert log.index("stopping nginx") < log.index("stopping uvicorn") < log.index("stopping celery beat")
