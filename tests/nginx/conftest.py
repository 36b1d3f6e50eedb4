"""A real nginx, rendered from nginx/ by the launcher's own code, in front of two uvicorn workers on unix
sockets with production settings: the layout of `make run-prod`, on free loopback ports.

The timeouts that matter to the tests are rendered short on purpose (websocket/SSE read timeout 3 s,
uvicorn and app pings every second), so "stays open across an idle period" takes seconds, not an hour.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import global_settings

from app.launcher import LauncherError, NginxSite, certificate_ensure, nginx_binary, nginx_version, web_worker_argv
from tests.envsetup import ROOT, RUN_DIR, free_port
from tests.support import child_env

STREAM_TIMEOUT = 3
JSON_BODY_BYTES = 1024 * 1024
DATASET_BODY_BYTES = 8 * 1024 * 1024
AUTH_RATE, AUTH_BURST = "10r/s", 5
LOGIN_FAILURES_ALLOWED = 3


def _required(what: str, error: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {error}; .ci/run installs {what}")
    pytest.skip(f"{error}; the tests through nginx need it")


@pytest.fixture(scope="session")
def nginx_path() -> str:
    try:
        binary = nginx_binary()
    except LauncherError as exc:
        _required("nginx", str(exc))
    if subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode != 0:
        _required("openssl", "openssl is not installed")
    return binary


@dataclass
class Proxy:
    url: str
    http_url: str
    ws_url: str
    netloc: str
    site: NginxSite
    sockets: list[Path]

    def access_log(self) -> str:
        return (self.site.prefix / "logs" / "access.log").read_text(errors="replace")

    def tls(self) -> ssl.SSLContext:
        """Verifies nginx against the self-signed certificate the launcher made, host name included."""
        return ssl.create_default_context(cafile=str(self.site.tls_cert))


def _wait(what: str, check, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready in {timeout:g}s:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(autouse=True)
def _production_password_hashes(settings) -> None:
    """The servers behind nginx run with production settings, which verify only Django's real hashers;
    accounts these tests make must be hashed the way production hashes (the rest of the suite uses MD5)."""
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS


@pytest.fixture(scope="session")
def proxy(nginx_path: str, service_env: dict[str, str]) -> Iterator[Proxy]:
    base = RUN_DIR / "nginx"
    run_dir, static_root = base / "run", base / "static"
    run_dir.mkdir(parents=True, mode=0o700)
    (static_root / "probe").mkdir(parents=True)
    (static_root / "probe" / "hello.txt").write_text("served by nginx\n")
    env = child_env({
        **service_env,
        "DJANGO_ENV": "production",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TORCHWIRE_SERVE_STATIC": "false",
        "STATIC_ROOT": str(static_root),
        "TORCHWIRE_LOGIN_RATE_LIMIT": str(LOGIN_FAILURES_ALLOWED),
        # SSE and event-socket pings, well inside the short stream timeout below.
        "TORCHWIRE_WS_PING_SECONDS": "1",
    })
    workers: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for i in range(2):
            path, log = run_dir / f"web-{i}.sock", base / f"web-{i}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(web_worker_argv(path, drain_seconds=2, ws_ping_seconds=1), cwd=ROOT, env=env,
                                        stdout=fh, stderr=subprocess.STDOUT)
            workers.append((proc, path, log))
        for proc, path, log in workers:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://localhost") as direct:
                _wait(f"uvicorn on {path}", lambda c=direct: c.get("/healthz").status_code == 200, proc, log)

        cert, key = base / "certs" / "localhost.crt", base / "certs" / "localhost.key"
        certificate_ensure(cert, key)
        site = NginxSite(
            prefix=base / "nginx", upstreams=[f"unix:{path}" for _, path, _ in workers], listen_hosts=["127.0.0.1"],
            https_port=free_port(), http_port=free_port(), tls_cert=cert, tls_key=key, static_root=static_root,
            json_body_bytes=JSON_BODY_BYTES, dataset_body_bytes=DATASET_BODY_BYTES, auth_rate=AUTH_RATE,
            auth_burst=AUTH_BURST, stream_timeout=STREAM_TIMEOUT, shutdown_timeout=2, worker_processes="2",
        )
        site.render(nginx_version(nginx_path))
        nginx_log = base / "nginx.log"
        with nginx_log.open("wb") as fh:
            nginx = subprocess.Popen(site.argv(nginx_path, "-g", "daemon off;"), stdout=fh, stderr=subprocess.STDOUT)
        netloc = f"127.0.0.1:{site.https_port}"
        proxy = Proxy(url=f"https://{netloc}", http_url=f"http://127.0.0.1:{site.http_port}", ws_url=f"wss://{netloc}",
                      netloc=netloc, site=site, sockets=[path for _, path, _ in workers])
        with httpx.Client(base_url=proxy.url, verify=proxy.tls(), timeout=5) as through:
            _wait("nginx", lambda: through.get("/readyz").status_code == 200, nginx, nginx_log)
        yield proxy
    finally:
        if nginx is not None:
            _stop(nginx, signal.SIGQUIT)
        for proc, _, _ in workers:
            _stop(proc)


@pytest.fixture
def client(proxy: Proxy) -> Iterator[httpx.Client]:
    """Everything these tests send, publish_model's uploads included, goes through nginx."""
    with httpx.Client(base_url=proxy.url, verify=proxy.tls(), timeout=30) as c:
        yield c


def loopback_alias_client(proxy: Proxy, source: str) -> httpx.Client:
    """A client whose connections come from another loopback address, so nginx sees a different peer."""
    try:
        with socket.socket() as probe:
            probe.bind((source, 0))
    except OSError:
        pytest.skip(f"cannot bind {source} on this machine")
    transport = httpx.HTTPTransport(local_address=source, verify=proxy.tls())
    return httpx.Client(base_url=proxy.url, transport=transport, timeout=30)
