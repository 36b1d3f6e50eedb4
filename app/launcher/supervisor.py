"""Starts the children in dependency order, restarts those that crash, and stops them in reverse."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from app import console_build
from app.config import BASE_DIR, Settings
from app.launcher.certs import secret_key_file
from app.launcher.children import OUTPUT_LOCK, Child, log
from app.launcher.nginx import ProdLayout, prod_layout, web_worker_argv
from app.launcher.process import (
    LauncherError,
    accepts,
    connect_host,
    describe_exit,
    die_with_parent,
    free_port,
    port_is_free,
    read_settings,
    redis_argv,
    redis_pings,
    url_host,
    wait_until_answers,
)

_POLL = 0.2

# A crashed child is restarted after 0.5 s, then 1, 2, 4 ... s while it keeps crashing within the window.
_RESTART_BACKOFF = 0.5

_MAX_RESTART_BACKOFF = 10.0


class _Interrupted(Exception):
    """A stop signal arrived during startup."""


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
        env = settings or read_settings()
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
            log(f"{signal.Signals(signum).name} again: killing the children now")
            return
        self.stop_signal = signum
        log(f"{signal.Signals(signum).name} received; shutting down")

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
        if layout is None and not port_is_free(config.host, config.port):
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
            self._spawn(self._console_child(f"http://{url_host(config.host)}:{config.port}"))
        web = [sys.executable, "-m", "uvicorn", "asgi:application", "--host", config.host]
        # No proxy in front: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 (its default), and
        # every local client could pick the address the login limit counts it under.
        web += ["--port", str(config.port), "--lifespan", "on", "--no-server-header", "--no-proxy-headers"]
        web += ["--timeout-graceful-shutdown", str(config.drain_seconds)]
        if config.web_workers > 1:
            web += ["--workers", str(config.web_workers)]
        self._spawn(Child("uvicorn", web, stop_timeout=config.drain_seconds + 5, extra_env=bridge))
        self.endpoints = [(connect_host(config.host), config.port)]
        if config.console_port:
            self.endpoints.append(("127.0.0.1", config.console_port))

    def _prepare_prod(self) -> ProdLayout:
        """Everything the production layout needs before a child starts: free ports, nginx with a checked
        config and a certificate, and the production environment of the children."""
        config, env = self.config, self.env
        for name, port in (("HTTPS_PORT", config.https_port), ("HTTP_PORT", config.http_port)):
            if not port_is_free(config.host, port):
                raise LauncherError(f"port {port} on {config.host} is taken; set {name} to a free one")
        env["DJANGO_ENV"] = "production"
        if not env.get("SECRET_KEY"):
            env["SECRET_KEY"] = secret_key_file(config.var_dir)
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
            log(f"made a self-signed certificate for localhost: {layout.site.tls_cert}")
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
        self.endpoints = [*self.endpoints, *layout.sockets, (connect_host(config.host), config.https_port)]

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
                log("building the web console (its sources changed, or it was never built; this takes minutes)")
            console_build.ensure_built(log=log)
        except console_build.ConsoleBuildError as exc:
            self._check_stop()
            if config.console == "on":
                raise LauncherError(str(exc)) from None
            log(f"WARNING: running without the web console: {exc}")
            return
        self._check_stop()
        config.console_port = config.settings.console_port or free_port()
        if not port_is_free("127.0.0.1", config.console_port):
            raise LauncherError(f"port {config.console_port} on 127.0.0.1 is taken; set TORCHWIRE_CONSOLE_PORT")

    def _console_child(self, api_url: str, *, secure: bool = False) -> Child:
        """The console's Next.js standalone server on a private loopback port; it calls the API at api_url."""
        assert self.config.console_port is not None
        var_dir = self.config.var_dir
        secret = self.config.settings.console_secret or secret_key_file(var_dir, "console-secret.txt")
        env = console_build.server_env(port=self.config.console_port, api_url=api_url, secret=secret,
                                       secure_cookies=secure)
        return Child("console", ["node", str(console_build.server_js())], stop_timeout=10, extra_env=env)

    def _wait_for_console(self, child: Child, port: int, timeout: float = 60.0) -> None:
        """nginx only once the console listens, as for the workers: else its first pages would be 502."""
        wait_until_answers(lambda: accepts(("127.0.0.1", port)), what=f"the console on port {port}",
                           timeout=timeout,
                           poll=child.poll, check_stop=self._check_stop)
        log(f"console (pid {child.pid}) listens on 127.0.0.1:{port}")

    def _spawn(self, child: Child) -> None:
        child.start(self.env)
        self.children.append(child)

    def _start_embedded_redis(self) -> None:
        port = self.config.redis_port
        if not port_is_free("127.0.0.1", port):
            raise LauncherError(
                f"port {port} on 127.0.0.1 is taken, so the embedded Redis cannot start there; set "
                f"TORCHWIRE_EMBEDDED_REDIS_PORT to a free port, or REDIS_URL to use a Redis you run"
            )
        data_dir = self.config.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        # Persisted under var/ (RDB every minute, plus the append-only file) so a task queued before a
        # restart is still there after it.
        argv = redis_argv(port, data_dir, persist=True)
        redis = Child("redis", argv, stop_timeout=30)
        self._spawn(redis)
        wait_until_answers(redis_pings(port), what="embedded Redis", timeout=60.0, poll=redis.poll,
                           check_stop=self._check_stop)
        url = self.config.settings.embedded_redis_url
        self.env["REDIS_URL"] = url
        log(f"embedded Redis on {url} (data in {data_dir})")

    def _wait_for_workers(self, workers: list[tuple[Child, Path]], timeout: float = 180.0) -> None:
        """Every worker in turn, within one ``timeout`` for them all."""
        deadline = time.monotonic() + timeout
        for child, path in workers:
            wait_until_answers(functools.partial(accepts, path), what=f"{child.name} on {path}",
                               timeout=max(0.0, deadline - time.monotonic()), poll=child.poll,
                               check_stop=self._check_stop)

    def _run_step(self, *command: str) -> None:
        """Runs one manage.py command to completion, its output going straight to ours.

        It shares the launcher's process group, so a Ctrl-C reaches it as well.
        """
        argv = [sys.executable, "manage.py", *command]
        log(f"running {' '.join(argv[1:])}")
        self._check_stop()
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env, preexec_fn=die_with_parent())
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
            raise LauncherError(f"`manage.py {' '.join(command)}` {describe_exit(code)}")

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
                        log(f"restarted {child.name} (pid {child.pid})")
                    continue
                code = child.poll()
                if code is not None and not self._crashed(child, code):
                    self._stop_all()
                    log(f"stopped because {child.name} kept crashing")
                    return 1
            if banner is not None:
                while banner and accepts(banner[0]):
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
        what = f"{child.name} (pid {pid}) {describe_exit(code)}"
        if count >= limit:
            log(f"{what}: {count} crash{'es' if count > 1 else ''} within {window:g}s; giving up and stopping "
                 f"everything")
            if child.tail:
                log(f"last output of {child.name}:\n" + "\n".join(f"  | {line}" for line in child.tail))
            return False
        delay = min(_RESTART_BACKOFF * 2 ** (count - 1), _MAX_RESTART_BACKOFF)
        log(f"{what}; restarting it in {delay:g}s (crash {count} of {limit} within {window:g}s stops everything)")
        child.restart_at = now + delay
        return True

    def _shutdown(self) -> int:
        if self._stop_all():
            log("all stopped")
            return 0
        log("stopped, but not every child stopped cleanly")
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
            base = f"https://{url_host(self.config.host)}{'' if port == 443 else f':{port}'}"
        else:
            base = f"http://{url_host(self.config.host)}:{self.config.port}"
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
        with OUTPUT_LOCK:
            print("\n".join([bar, *lines, bar]), file=sys.stderr, flush=True)
