"""The launcher's children: one supervised process each, its output relayed line by line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from app.config import BASE_DIR
from app.launcher.process import die_with_parent

_POLL = 0.2

_KILL_WAIT = 5.0

_TAIL_LINES = 20

# Whole lines from the children and from the launcher itself; reentrant, as a signal handler logs too.
OUTPUT_LOCK = threading.RLock()


def log(message: str) -> None:
    with OUTPUT_LOCK:
        print(f"launcher: {message}", file=sys.stderr, flush=True)


def _relay(pipe: IO[bytes], out: IO[bytes], tail: deque[str]) -> None:
    """Copies a child's output stream to ours, a line at a time, keeping the last lines for a crash report."""
    with pipe:
        for line in iter(pipe.readline, b""):
            tail.append(line.decode(errors="replace").rstrip())
            with OUTPUT_LOCK, contextlib.suppress(OSError, ValueError):
                out.write(line)
                out.flush()


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
            preexec_fn=die_with_parent(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
        log(f"stopping {self.name} (pid {self.pid})")
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
            log(f"{self.name} (pid {self.pid}) did not stop in time; killing it")
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
