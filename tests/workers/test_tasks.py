"""A real Celery worker: the health ping task round-trips, carries the request id, and /system/workers sees it."""

from __future__ import annotations

import subprocess

import pytest
from celery import Celery

from tests.envsetup import RUN_DIR
from tests.private_services import private_redis
from tests.support import bearer, login, start_celery_worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_ping_carries_request_id(celery_worker_proc):
    from app.core.logging import request_id_var
    from workers.tasks import health_ping_task

    token = request_id_var.set("req-from-api-42")
    try:
        result = health_ping_task.delay()
    finally:
        request_id_var.reset(token)
    payload = result.get(timeout=30)
    assert payload["ok"] is True
    assert payload["request_id"] == "req-from-api-42"
    assert payload["torch_threads"] == 1  # TORCHWIRE_TRAIN_THREADS' default, not torch's one per core
    # Prefork: the task ran in a pool process of that worker.
    stat = open(f"/proc/{payload['pid']}/stat").read()
    assert int(stat.rsplit(")", 1)[1].split()[1]) == celery_worker_proc.pid


def test_system_workers_lists_live_worker(celery_worker_proc, client, make_user):
    admin = login(client, make_user("admin"))["access"]
    response = client.get("/api/v1/system/workers", headers=bearer(admin))
    assert response.status_code == 200, response.text
    body = response.json()
    names = [w["name"] for w in body["workers"]]
    assert any(name.startswith("test-worker@") for name in names), body
    assert all(w["ok"] for w in body["workers"])


def test_celery_config_is_safe():
    from workers.celery import app

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_train_threads_setting_is_applied_in_the_process_that_runs_tasks(pool):
    # A worker of its own, on a Redis of its own: the session's worker must not take this ping.
    with private_redis("threads-redis") as redis_server:
        env = {"REDIS_URL": redis_server.url, "TORCHWIRE_TRAIN_THREADS": "3"}
        args = ["--pool", "solo"] if pool == "solo" else []
        worker = start_celery_worker(env, hostname=f"threads-{pool}-{redis_server.port}@%h",
                                     log=RUN_DIR / f"celery-threads-{pool}-{redis_server.port}.log", extra=args)
        client = Celery(broker=redis_server.url, backend=redis_server.url)
        try:
            result = client.send_task("workers.tasks.health_ping_task", queue="default")
            payload = result.get(timeout=60)
        finally:
            client.close()
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
    assert payload["torch_threads"] == 3, payload
    assert (payload["pid"] == worker.pid) == (pool == "solo")  # prefork: a pool process ran it
