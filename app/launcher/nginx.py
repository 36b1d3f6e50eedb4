"""The production layout: nginx/ templates rendered in front of uvicorn workers on unix sockets."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app import console_build
from app.config import BASE_DIR, Settings
from app.core.headers import API_POLICY
from app.launcher.certs import certificate_ensure
from app.launcher.process import LauncherError, read_settings

if TYPE_CHECKING:
    from app.launcher.supervisor import Config


NGINX_TEMPLATES = BASE_DIR / "nginx"

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")

_RATE = re.compile(r"([0-9]{1,9})r/([sm])")

# sun_path holds 108 bytes on Linux, the terminating NUL included.
_MAX_SOCKET_PATH = 107


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Fills ``{{ name }}`` placeholders (nginx itself owns ``$``); a placeholder without a value is an
    error, never an empty string."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise LauncherError(f"the nginx templates use {{{{ {name} }}}}, which nothing provides")
        return str(values[name])

    return _PLACEHOLDER.sub(fill, text)


def _rate_per_second(rate: str) -> float:
    match = _RATE.fullmatch(rate)
    if match is None:
        raise LauncherError(f"{rate!r} is not an nginx rate such as 10r/s or 30r/m")
    return int(match.group(1)) / (60 if match.group(2) == "m" else 1)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_binary() -> str:
    """TORCHWIRE_NGINX, else nginx on PATH, else Debian's /usr/sbin/nginx (often not on a user's PATH)."""
    configured = read_settings().nginx
    if configured:
        return configured
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise LauncherError("nginx is not installed: `apt-get install nginx` (or set TORCHWIRE_NGINX to its path)")
    return found


def nginx_version(binary: str) -> tuple[int, ...]:
    """From `nginx -v` ("nginx version: nginx/1.22.1", on stderr)."""
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    if match is None:
        raise LauncherError(f"`{binary} -v` did not say which version it is: {result.stderr.strip()!r}")
    return tuple(int(part) for part in match.groups())


@dataclass
class NginxSite:
    """What nginx/nginx.conf is rendered from. ``upstreams`` are ``unix:/path`` sockets or ``host:port``
    addresses of ASGI workers, on this host or others."""

    prefix: Path
    upstreams: list[str]
    listen_hosts: list[str]
    https_port: int
    http_port: int
    tls_cert: Path
    tls_key: Path
    static_root: Path
    json_body_bytes: int = 8 * 1024 * 1024
    # Upload caps sit a little above the app's own (multipart framing), so the app, which knows which
    # limit was passed, is the one that normally answers 413.
    dataset_body_bytes: int = 200 * 1024 * 1024 + 1024 * 1024
    artifact_body_bytes: int = 2 * 1024**3 + 1024 * 1024
    auth_rate: str = "30r/m"
    auth_burst: int = 10
    infer_rate: str = "200r/s"
    infer_burst: int = 400
    read_timeout: int = 120
    upload_timeout: int = 600
    stream_timeout: int = 3600
    shutdown_timeout: int = 10
    worker_processes: str = "auto"
    trusted_proxies: list[str] = field(default_factory=list)
    # host:port of the console's server; empty: `location /` goes to the ASGI workers.
    console_upstreams: list[str] = field(default_factory=list)
    console_static: Path = field(default_factory=console_build.static_dir)
    hsts_seconds: int = 31536000

    @classmethod
    def from_env(cls, env: Settings, *, prefix: Path, upstreams: list[str], listen_host: str, https_port: int,
                 http_port: int, static_root: Path, console_upstreams: list[str] | None = None) -> NginxSite:
        """The body caps follow the app's own (app/config.py), a little higher (multipart framing)."""
        slack = 1024 * 1024
        return cls(
            prefix=prefix,
            upstreams=upstreams,
            listen_hosts=[listen_host],
            https_port=https_port,
            http_port=http_port,
            tls_cert=env.tls_cert,
            tls_key=env.tls_key,
            static_root=static_root,
            json_body_bytes=env.max_json_bytes,
            dataset_body_bytes=env.max_dataset_bytes + slack,
            artifact_body_bytes=env.max_artifact_bytes + slack,
            auth_rate=env.nginx_auth_rate,
            auth_burst=env.nginx_auth_burst,
            infer_rate=env.nginx_infer_rate,
            infer_burst=env.nginx_infer_burst,
            read_timeout=env.nginx_read_timeout,
            upload_timeout=env.nginx_upload_timeout,
            stream_timeout=env.nginx_stream_timeout,
            shutdown_timeout=env.drain_seconds,
            worker_processes=env.nginx_worker_processes,
            trusted_proxies=env.nginx_trusted_proxies,
            hsts_seconds=env.secure_hsts_seconds,
            console_upstreams=console_upstreams or [],
        )

    @property
    def conf(self) -> Path:
        return self.prefix / "conf" / "nginx.conf"

    def values(self, version: tuple[int, ...]) -> dict[str, object]:
        indent = " " * 8
        # `listen ... http2` became a separate `http2 on;` in 1.25.1 (the old form still works, warning).
        http2_directive = version >= (1, 25, 1)
        https = [f"{indent}listen {_address(h, self.https_port)} ssl{'' if http2_directive else ' http2'};"
                 for h in self.listen_hosts]
        if http2_directive:
            https.append(f"{indent}http2 on;")
        if self.trusted_proxies:
            real_ip = [f"    set_real_ip_from {cidr};" for cidr in self.trusted_proxies]
            real_ip += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive on;"]
        else:
            real_ip = ["    # No load balancer in front (TORCHWIRE_NGINX_TRUSTED_PROXIES): the peer is the client."]
        servers = []
        for upstream in self.upstreams:
            if upstream.startswith("unix:") and len(upstream) - len("unix:") > _MAX_SOCKET_PATH:
                raise LauncherError(f"socket path {upstream[5:]} is too long for a unix socket; use a shorter "
                                    f"TORCHWIRE_VAR_DIR")
            servers.append(f"{indent}server {upstream} max_fails=1 fail_timeout=5s;")
        if not servers:
            raise LauncherError("nginx needs at least one upstream: set TORCHWIRE_WEB_WORKERS or TORCHWIRE_UPSTREAMS")
        slowest = min(_rate_per_second(self.auth_rate), _rate_per_second(self.infer_rate))
        return {
            # As root nginx would hand its workers to `nobody`, who cannot reach the 0700 socket directory
            # or read var/; a non-root master cannot switch users at all.
            "user": "user root;" if os.geteuid() == 0 else "# (runs as the user who started it)",
            "worker_processes": self.worker_processes,
            "prefix": self.prefix,
            "shutdown_timeout": self.shutdown_timeout,
            "real_ip": "\n".join(real_ip),
            "auth_rate": self.auth_rate,
            "auth_burst": self.auth_burst,
            "infer_rate": self.infer_rate,
            "infer_burst": self.infer_burst,
            "retry_after": max(1, math.ceil(1 / slowest)),
            "read_timeout": self.read_timeout,
            "upload_timeout": self.upload_timeout,
            "stream_timeout": self.stream_timeout,
            "upstream_servers": "\n".join(servers),
            "console_static": self.console_static,
            "console_servers": "\n".join(
                [f"{indent}server {u} max_fails=1 fail_timeout=5s;" for u in self.console_upstreams] or servers),
            "http_listen": "\n".join(f"{indent}listen {_address(h, self.http_port)};" for h in self.listen_hosts),
            "https_listen": "\n".join(https),
            "https_port_suffix": "" if self.https_port == 443 else f":{self.https_port}",
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
            "static_root": self.static_root,
            "json_body_bytes": self.json_body_bytes,
            "dataset_body_bytes": self.dataset_body_bytes,
            "artifact_body_bytes": self.artifact_body_bytes,
            "hsts_seconds": self.hsts_seconds,
            "api_csp": API_POLICY,
        }

    def render(self, version: tuple[int, ...]) -> Path:
        """Renders every file of nginx/ into ``prefix/conf`` (includes resolve against that directory)
        and creates the log and temp directories. Returns the main config's path."""
        values = self.values(version)
        conf_dir = self.conf.parent
        for directory in (conf_dir, self.prefix / "logs", self.prefix / "tmp"):
            directory.mkdir(parents=True, exist_ok=True)
        for template in sorted(NGINX_TEMPLATES.glob("*.conf")):
            (conf_dir / template.name).write_text(render_template(template.read_text(), values))
        return self.conf

    def argv(self, binary: str, *extra: str) -> list[str]:
        """`-e stderr`: errors from before the config is read must not go to /var/log/nginx."""
        return [binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr", *extra]


def web_worker_argv(path: Path, *, drain_seconds: int, ws_ping_seconds: int = 20) -> list[str]:
    """One uvicorn worker of the production layout, on its own unix socket behind nginx."""
    argv = [sys.executable, "-m", "uvicorn", "asgi:application", "--uds", str(path), "--lifespan", "on"]
    # "*": only nginx reaches the socket (its directory is private to this user), and nginx overwrites
    # X-Forwarded-For with the address it saw, so the header cannot be forged from outside.
    argv += ["--no-server-header", "--proxy-headers", "--forwarded-allow-ips", "*"]
    # Longer than nginx's upstream keepalive_timeout (60 s); see nginx/nginx.conf.
    argv += ["--timeout-keep-alive", "75", "--timeout-graceful-shutdown", str(drain_seconds)]
    # The pings keep an idle websocket inside nginx's proxy_read_timeout.
    return [*argv, "--ws-ping-interval", str(ws_ping_seconds), "--ws-ping-timeout", str(ws_ping_seconds)]


@dataclass
class ProdLayout:
    binary: str
    site: NginxSite
    sockets: list[Path]
    made_certificate: bool


def prod_layout(config: Config) -> ProdLayout:
    """The nginx config `make run-prod` uses, rendered and accepted by `nginx -t`, with a self-signed
    certificate made if none is configured; upstreams are the local workers' sockets under var/run (a
    directory only this user may enter: uvicorn trusts the X-Forwarded-* headers of whoever connects)
    plus TORCHWIRE_UPSTREAMS."""
    binary = nginx_binary()
    run_dir = config.var_dir / "run"
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o700)
    sockets = [run_dir / f"web-{i}.sock" for i in range(config.web_workers)]
    env = config.settings
    site = NginxSite.from_env(
        env, prefix=config.var_dir / "nginx", upstreams=[f"unix:{s}" for s in sockets] + env.upstreams,
        console_upstreams=[f"127.0.0.1:{config.console_port}"] if config.console_port else [],
        listen_host=config.host, https_port=config.https_port, http_port=config.http_port,
        static_root=env.static_root.resolve(),
    )
    made = certificate_ensure(site.tls_cert, site.tls_key)
    site.render(nginx_version(binary))
    check = subprocess.run(site.argv(binary, "-t", "-q"), capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise LauncherError(f"nginx refuses {site.conf}:\n{check.stderr.strip()}")
    return ProdLayout(binary=binary, site=site, sockets=sockets, made_certificate=made)
