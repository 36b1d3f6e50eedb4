"""End to end: `python -m app.launcher` as `make run` starts it, on SQLite and its embedded Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRUBBED = {"DATABASE_URL", "REDIS_URL", "STORAGE_URL", "AWS_ENDPOINT_URL", "HOST", "PORT", "WEB_CONCURRENCY"}
SCRUBBED |= {"SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"}
SCRUBBED_PREFIXES = ("TEST_", "TORCHWIRE_", "DJANGO_", "CELERY_")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher relies on Linux prctl"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) from /proc/<pid>/stat, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``, by pid, with its start time (to tell a reused pid apart)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for pid, started in children.get(stack.pop(), []):
            if pid not in found:
                found[pid] = started
                stack.append(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _alive(processes: dict[int, int]) -> list[str]:
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] not in ("Z", "X"):
            alive.append(f"{pid}: {_cmdline(pid)}")
    return alive


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the launcher did not exit within {timeout:g}s")


class Launched:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.var_dir = tmp_path / "var"
        self.log_path = tmp_path / "launcher.log"
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith(SCRUBBED_PREFIXES)}
        env |= {
            "DJANGO_ENV": "development",
            "TORCHWIRE_VAR_DIR": str(self.var_dir),
            "TORCHWIRE_EMBEDDED_REDIS_PORT": str(_free_port()),
            "PORT": str(self.port),
            "STORAGE_URL": f"file://{tmp_path / 'storage'}",
        }
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.launcher"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /healthz and /readyz both answer 200."""
        deadline = self.started + timeout
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            for path in ("/healthz", "/readyz"):
                while True:
                    if self.process.poll() is not None:
                        pytest.fail(f"the launcher exited with {self.process.returncode}:\n{self.log()}")
                    try:
                        if client.get(path).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        pytest.fail(f"{path} was not 200 within {timeout:g}s:\n{self.log()}")
                    time.sleep(0.2)
        return time.monotonic() - self.started

    def descendants_when_settled(self) -> dict[int, int]:
        """The process tree once the Celery worker has forked its pool process."""
        deadline = time.monotonic() + 30
        while True:
            found = _descendants(self.process.pid)
            grandchildren = [pid for pid in found if pid not in self.children()]
            if any(" worker " in _cmdline(pid) for pid in grandchildren) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def children(self) -> dict[int, str]:
        """The launcher's own children, by pid, with their command lines."""
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
                if stat[1] == self.process.pid:
                    found[int(entry.name)] = _cmdline(int(entry.name))
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Launched]:
    launched = Launched(tmp_path)
    try:
        yield launched
    finally:
        launched.close()


def test_serves_and_stops_cleanly_on_sigterm(launched: Launched) -> None:
    ready_after = launched.wait_ready()
    print(f"launcher ready after {ready_after:.1f}s")

    password_file = launched.var_dir / "admin-password.txt"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    response = httpx.post(
        f"{launched.base_url}/api/v1/auth/token", json={"username": "admin", "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["access"]
    # The login limit works on the embedded Redis (6.2), and uvicorn trusts no X-Forwarded-For here.
    wrong = {"username": "admin", "password": "wrong"}
    for attempt in range(10):
        forged = {"X-Forwarded-For": f"203.0.113.{attempt}"}
        response = httpx.post(f"{launched.base_url}/api/v1/auth/token", json=wrong, headers=forged, timeout=30)
        assert response.status_code == 401, response.text
    response = httpx.post(f"{launched.base_url}/api/v1/auth/token", json=wrong, timeout=30,
                          headers={"X-Forwarded-For": "198.51.100.7"})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1, response.text

    processes = launched.descendants_when_settled()
    assert len(processes) >= 4, processes  # redis, uvicorn, worker (+ its pool), beat

    launched.process.send_signal(signal.SIGTERM)
    code = _wait_exit(launched.process, timeout=40)
    assert code == 0, launched.log()
    assert _alive(processes) == [], launched.log()
    assert (launched.var_dir / "redis" / "dump.rdb").exists(), "Redis did not save on the way out"


def test_a_dead_child_stops_everything(launched: Launched) -> None:
    launched.wait_ready()
    processes = launched.descendants_when_settled()
    uvicorn = [pid for pid, cmdline in launched.children().items() if "-m uvicorn " in cmdline]
    assert len(uvicorn) == 1, launched.children()

    os.kill(uvicorn[0], signal.SIGKILL)
    code = _wait_exit(launched.process, timeout=40)
    assert code != 0
    assert f"uvicorn (pid {uvicorn[0]}) killed by SIGKILL" in launched.log()
    assert _alive(processes) == [], launched.log()
