"""A real Celery worker: the health ping task round-trips, carries the request id, and /system/workers sees it."""

from __future__ import annotations

import pytest

from tests.support import bearer, login

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
