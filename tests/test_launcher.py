"""End to end: `python -m app.launcher` as `make run` starts it, on SQLite and its embedded Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
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
    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:
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
            **(extra_env or {}),
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

    def child(self, marker: str, *, not_in: Sequence[int] = (), timeout: float = 60.0) -> int:
        """The pid of the launcher's child whose command line contains ``marker`` (waiting for a restarted
        one, not in ``not_in``, to appear)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [pid for pid, cmdline in self.children().items() if marker in cmdline and pid not in not_in]
            if found:
                return found[0]
            if self.process.poll() is not None:
                pytest.fail(f"the launcher exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.1)
        pytest.fail(f"no child with {marker!r} within {timeout:g}s: {self.children()}\n{self.log()}")

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


class HealthProbe:
    """Asks /healthz every 0.1 s on a thread of its own, keeping every answer that was not a 200."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.wait(0.1):
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.answers += 1
                if status != 200:
                    self.failures.append(str(status))

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _wait_status(base_url: str, path: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(base_url + path, timeout=2).status_code
            if last == status:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{path} did not answer {status} within {timeout:g}s (last: {last!r})")


WORKER, REDIS, UVICORN = "celery -A workers.celery worker", "redis-server", "-m uvicorn "


def test_a_killed_worker_and_redis_are_restarted_while_web_keeps_serving(tmp_path: Path) -> None:
    # One torch thread, so the training job is quick on a loaded host; a short lease, so the job the
    # killed worker was running is taken up again within seconds rather than a minute.
    launched = Launched(tmp_path, {"OMP_NUM_THREADS": "1", "TORCHWIRE_JOB_LEASE_SECONDS": "5",
                                   "TORCHWIRE_JOB_REAP_SECONDS": "2"})
    try:
        launched.wait_ready()
        password = (launched.var_dir / "admin-password.txt").read_text().strip()
        client = httpx.Client(base_url=launched.base_url, timeout=30)
        token = client.post("/api/v1/auth/token", json={"username": "admin", "password": password}).json()["access"]
        headers = {"Authorization": f"Bearer {token}"}
        rows = "\n".join(f"{i % 7},{(i * 3) % 5},{'a' if (i * 5) % 7 > 2 else 'b'}" for i in range(600))
        dataset = client.post("/api/v1/datasets", headers=headers,
                              files={"file": ("d.csv", f"x,y,label\n{rows}\n".encode(), "text/csv")})
        assert dataset.status_code == 201, dataset.text
        response = client.post("/api/v1/jobs/train", headers=headers, json={
            "dataset_id": dataset.json()["id"], "target": "label", "task": "classification", "model_name": "kept",
            "hyperparameters": {"epochs": 40, "patience": 40, "hidden": [16], "batch_size": 8}})
        assert response.status_code == 201, response.text
        job_url = f"/api/v1/jobs/{response.json()['id']}"
        deadline = time.monotonic() + 120
        while (job := client.get(job_url, headers=headers).json())["progress"].get("epoch", 0) < 2:
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.1)

        seen = launched.descendants_when_settled()
        worker, redis = launched.child(WORKER), launched.child(REDIS)
        pool = _descendants(worker)
        assert pool, "the worker has no pool process"
        with HealthProbe(launched.base_url) as probe:
            os.kill(worker, signal.SIGKILL)  # while it trains
            new_worker = launched.child(WORKER, not_in=[worker])
            os.kill(redis, signal.SIGKILL)
            new_redis = launched.child(REDIS, not_in=[redis])
            _wait_status(launched.base_url, "/readyz", 200, timeout=60)
        assert probe.failures == [] and probe.answers > 0, probe.failures
        assert _alive(pool) == [], "the killed worker's pool process outlived it"
        log = launched.log()
        assert f"celery worker (pid {worker}) killed by SIGKILL; restarting it in 0.5s" in log
        assert f"restarted celery worker (pid {new_worker})" in log
        assert f"redis (pid {redis}) killed by SIGKILL; restarting it in 0.5s" in log
        assert f"restarted redis (pid {new_redis})" in log

        # The restarted worker, through the restarted Redis, takes the job up again once its lease runs out.
        deadline = time.monotonic() + 180
        while (job := client.get(job_url, headers=headers).json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"the job did not finish: {job}\n{launched.log()}"
            time.sleep(0.3)
        assert job["state"] == "succeeded" and job["attempts"] == 2, job
        assert [v["version"] for v in client.get("/api/v1/models/kept/versions", headers=headers).json()] == [1]
        client.close()

        seen |= launched.descendants_when_settled()
        launched.process.send_signal(signal.SIGTERM)
        assert _wait_exit(launched.process, timeout=60) == 0, launched.log()
        assert _alive(seen) == [], launched.log()
    finally:
        launched.close()


def test_a_child_that_keeps_crashing_stops_everything_loudly(tmp_path: Path) -> None:
    launched = Launched(tmp_path, {"TORCHWIRE_CHILD_MAX_CRASHES": "3", "TORCHWIRE_CHILD_CRASH_WINDOW_SECONDS": "300"})
    try:
        launched.wait_ready()
        seen = launched.descendants_when_settled()
        killed: list[int] = []
        for _ in range(3):
            pid = launched.child(UVICORN, not_in=killed)
            if killed:  # the restarted web process serves again on the same port
                _wait_status(launched.base_url, "/healthz", 200, timeout=60)
                seen |= _descendants(launched.process.pid)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        code = _wait_exit(launched.process, timeout=60)
        assert code != 0
        log = launched.log()
        assert log.count("restarted uvicorn (pid") == 2, log
        assert (f"uvicorn (pid {killed[-1]}) killed by SIGKILL: 3 crashes within 300s; giving up and stopping "
                f"everything") in log
        assert "last output of uvicorn:\n  | " in log  # what it printed before it died, quoted
        assert "stopped because uvicorn kept crashing" in log
        assert _alive(seen) == [], log
    finally:
        launched.close()
