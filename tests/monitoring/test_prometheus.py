"""/metrics beyond serving: HTTP by route template, websockets, events, Celery tasks from the workers,
queue lengths, the database pool, and aggregation across uvicorn workers in multiprocess mode."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest
import websockets
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.monitoring import celery_metrics, metrics
from tests.envsetup import ROOT, RUN_DIR, free_port
from tests.support import bearer, child_env, login

pytestmark = pytest.mark.django_db(transaction=True)


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_http_requests_are_counted_by_route_template(client, make_user):
    token = login(client, make_user("member"))["access"]
    before = client.get("/metrics").text
    model = f"no-such-model-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        assert client.get(f"/api/v1/models/{model}", headers=bearer(token)).status_code == 404
    assert client.get(f"/not-a-route-{uuid.uuid4().hex[:8]}").status_code == 404
    after = client.get("/metrics").text

    route = {"route": "/api/v1/models/<name>", "method": "GET", "status": "404"}
    assert value(after, "torchwire_http_requests_total", **route) - value(
        before, "torchwire_http_requests_total", **route) == 3
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert value(after, "torchwire_http_requests_total", **unmatched) - value(
        before, "torchwire_http_requests_total", **unmatched) == 1
    assert value(after, "torchwire_http_request_duration_seconds_count", route="/api/v1/models/<name>",
                 method="GET") >= 3
    assert value(after, "torchwire_http_requests_total", route="/metrics", method="GET", status="200") >= 1
    assert model not in after and "not-a-route" not in after


async def test_open_websockets_gauge(server, client, make_user):
    access = login(client, make_user("member"))["access"]
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def open_sockets() -> float:
            return value((await http.get("/metrics")).text, "torchwire_websockets_open", consumer="EchoConsumer")

        baseline = await open_sockets()
        async with websockets.connect(f"{server.ws_url}/ws/v1/echo", subprotocols=["bearer", access]) as ws:
            await ws.send('{"hello": 1}')
            await ws.recv()
            assert await open_sockets() == baseline + 1
        # The server runs disconnect after the close handshake: poll for it.
        for _ in range(200):
            if await open_sockets() == baseline:
                break
            await asyncio.sleep(0.05)
        assert await open_sockets() == baseline
        text = (await http.get("/metrics")).text
        assert value(text, "torchwire_websockets_accepted_total", consumer="EchoConsumer") >= 1


def test_celery_task_metrics_come_from_the_worker(celery_worker_proc, client):
    from app.core.tasks import celery_client

    task = "workers.tasks.health_ping_task"
    before = client.get("/metrics").text
    result = celery_client().send_task(task)
    assert result.get(timeout=30)["ok"] is True
    # postrun (which writes the counts) runs just after the result is stored.
    deadline = time.monotonic() + 10
    while True:
        text = client.get("/metrics").text
        done = value(text, "torchwire_celery_tasks_total", task=task, state="success")
        if done > value(before, "torchwire_celery_tasks_total", task=task, state="success") or \
                time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done == value(before, "torchwire_celery_tasks_total", task=task, state="success") + 1
    assert value(text, "torchwire_celery_task_duration_seconds_count", task=task) == value(
        before, "torchwire_celery_task_duration_seconds_count", task=task) + 1
    assert value(text, "torchwire_celery_task_duration_seconds_bucket", task=task, le="+Inf") == value(
        text, "torchwire_celery_task_duration_seconds_count", task=task)
    assert "torchwire_celery_queue_length" in names(text)
    assert value(text, "torchwire_metrics_collector_up", collector="celery_tasks") == 1


def test_retries_failures_and_worker_events_reach_metrics(monkeypatch):
    """The worker-side handlers, driven as Celery drives them, and what the scrape then renders."""
    task = SimpleNamespace(name=f"tests.fake_{uuid.uuid4().hex[:8]}")
    celery_metrics._prerun(task_id="a", task=task)
    celery_metrics._retry(sender=task)
    celery_metrics._postrun(task_id="a", task=task, state="RETRY")
    celery_metrics._prerun(task_id="b", task=task)
    celery_metrics._failure(task_id="b", sender=task)  # in the task's process: postrun counts it
    celery_metrics._postrun(task_id="b", task=task, state="FAILURE")
    celery_metrics._failure(task_id="c", sender=task)  # a lost child, seen by the main process
    celery_metrics._revoked(request=SimpleNamespace(id="d", task=task.name), sender=task)

    published = "torchwire_events_published_total"
    before = REGISTRY.get_sample_value(published, {"topic_prefix": "job"}) or 0.0
    monkeypatch.setattr(celery_metrics._state, "in_worker", True)
    monkeypatch.setattr(celery_metrics._state, "flushed_at", 0.0)
    metrics.event_published("job:1")  # in a worker: into Redis
    monkeypatch.setattr(celery_metrics._state, "in_worker", False)
    metrics.event_published("job:1")  # in a web process: this process's registry

    text = metrics.render().decode()
    assert value(text, "torchwire_celery_task_retries_total", task=task.name) == 1
    assert value(text, "torchwire_celery_tasks_total", task=task.name, state="retry") == 1
    assert value(text, "torchwire_celery_tasks_total", task=task.name, state="failure") == 2
    assert value(text, "torchwire_celery_tasks_total", task=task.name, state="revoked") == 1
    assert value(text, "torchwire_celery_task_duration_seconds_count", task=task.name) == 2
    # One family, the worker's and this process's counts added up.
    assert text.count(f"# TYPE {published} counter") == 1
    assert value(text, published, topic_prefix="job") >= before + 2


def test_queue_length_counts_waiting_messages():
    from django.conf import settings

    from app.core.tasks import celery_client

    queue = f"tw-test-{uuid.uuid4().hex[:8]}"
    broker = celery_metrics.scrape_client(settings.CELERY_BROKER_URL)
    try:
        for priority in (None, None, 9):
            celery_client().send_task("workers.tasks.health_ping_task", queue=queue, priority=priority)
        (family, unacked) = celery_metrics.queue_families(broker, [queue])
        assert [(s.labels, s.value) for s in family.samples] == [({"queue": queue}, 3.0)]
        assert unacked.name == "torchwire_celery_unacked_messages"
    finally:
        broker.delete(queue, *(queue + suffix for suffix in celery_metrics._PRIORITY_SUFFIXES))


def test_database_pool_and_jobs_gauges(client, service_env):
    assert client.get("/readyz").status_code == 200  # uses the database, so the pool is open
    text = client.get("/metrics").text
    assert value(text, "torchwire_jobs", kind="train", state="queued") >= 0
    assert {"torchwire_jobs"} <= names(text)
    for collector in ("celery_tasks", "celery_queues", "jobs"):
        assert value(text, "torchwire_metrics_collector_up", collector=collector) == 1, collector
    if not service_env["DATABASE_URL"].startswith("postgres"):
        # SQLite has no pool: the family is declared (HELP/TYPE lines) but has no samples.
        assert "torchwire_db_pool_connections" not in names(text)
        return
    from django.conf import settings

    pool_max = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    assert value(text, "torchwire_db_pool_max_connections", database="default") == pool_max
    held = value(text, "torchwire_db_pool_connections", database="default")
    assert 1 <= held <= pool_max
    assert value(text, "torchwire_db_pool_waiting_requests", database="default") == 0


def test_websocket_and_event_helpers():
    class Probe:
        pass

    def gauge() -> float:
        return REGISTRY.get_sample_value("torchwire_websockets_open", {"consumer": "Probe"}) or 0.0

    closed, dropped = Probe(), Probe()
    metrics.websocket_opened(closed)
    metrics.websocket_opened(closed)
    metrics.websocket_opened(dropped)
    assert gauge() == 2
    metrics.websocket_closed(closed)
    metrics.websocket_closed(closed)
    assert gauge() == 1
    del dropped  # a consumer that never ran its disconnect handler
    gc.collect()
    assert gauge() == 0

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    start = (count("torchwire_events_delivered_total", transport="sse"),
             count("torchwire_events_replayed_total", transport="sse"),
             count("torchwire_events_dropped_total", reason="slow_consumer"),
             count("torchwire_events_slow_consumer_closes_total", transport="ws"))
    metrics.event_delivered(5, transport="sse")
    metrics.event_replayed(2, transport="sse")
    metrics.event_dropped(7)
    metrics.slow_consumer_closed()
    assert (count("torchwire_events_delivered_total", transport="sse"),
            count("torchwire_events_replayed_total", transport="sse"),
            count("torchwire_events_dropped_total", reason="slow_consumer"),
            count("torchwire_events_slow_consumer_closes_total", transport="ws")) == (
        start[0] + 5, start[1] + 2, start[2] + 7, start[3] + 1)


def test_metrics_aggregate_across_uvicorn_workers(service_env, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    port = free_port()
    log = RUN_DIR / f"uvicorn-workers-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--lifespan", "on"],
            cwd=ROOT, env=child_env({**service_env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}),
            stdout=fh, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(list(directory.glob("gauge_livesum_*.db"))) < 2 or not _up(url):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        for _ in range(40):  # a connection each, so the kernel spreads them over both workers
            assert httpx.get(f"{url}/v2/health/live", timeout=10).status_code == 200
        route = {"route": "/v2/health/live", "method": "GET", "status": "200"}
        for _ in range(6):  # whichever worker answers the scrape reports both workers' counts
            text = httpx.get(f"{url}/metrics", timeout=10).text
            assert value(text, "torchwire_http_requests_total", **route) == 40
        assert value(text, "torchwire_http_requests_in_flight") == 1  # the scrape itself
    finally:
        proc.terminate()
        proc.wait(30)
    # Each worker dropped its live gauges on the way out.
    assert list(directory.glob("gauge_livesum_*.db")) == []


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_live_gauges_of_dead_workers_are_dropped(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (dead.pid, alive.pid):
            (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{dead.pid}.db").write_bytes(b"")
        metrics._forget_dead_processes(str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"counter_{dead.pid}.db", f"gauge_livesum_{alive.pid}.db"])
    finally:
        alive.kill()
        alive.wait()
